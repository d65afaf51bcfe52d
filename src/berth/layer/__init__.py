"""The layer store: read-only layers by ChainID over a graph driver, and RW layers."""

from berth.layer.chain import chain_id, chain_ids
from berth.layer.store import LayerStore, ROLayer, RWLayer

__all__ = ["LayerStore", "ROLayer", "RWLayer", "chain_id", "chain_ids"]
