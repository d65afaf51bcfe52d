"""Encoding helpers that reproduce Go's ``omitempty`` on top of msgspec.

msgspec encodes every field; the Engine API omits some fields when they are
empty.  A Struct lists those wire names in ``__omitempty__`` and
:func:`to_wire` drops them when their value is empty.
"""

from __future__ import annotations

from typing import Any

import msgspec

_encoder = msgspec.json.Encoder()


def _empty(value: Any) -> bool:
    # False == 0 in Python, so booleans are covered too.
    if isinstance(value, (list, dict, str)):
        return not value
    return value is None or value == 0


def to_wire(obj: Any) -> Any:
    """Convert *obj* to JSON-ready builtins, honouring ``__omitempty__`` of each Struct."""
    if isinstance(obj, msgspec.Struct):
        cls = type(obj)
        omit: frozenset[str] = getattr(cls, "__omitempty__", frozenset())
        info = _fields(cls)
        out: dict[str, Any] = {}
        for attr, wire in info:
            value = getattr(obj, attr)
            if value is msgspec.UNSET:
                continue
            if wire in omit and _empty(value):
                continue
            out[wire] = to_wire(value)
        return out
    if isinstance(obj, dict):
        return {k: to_wire(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_wire(v) for v in obj]
    return obj


_FIELD_CACHE: dict[type, tuple[tuple[str, str], ...]] = {}


def _fields(cls: type) -> tuple[tuple[str, str], ...]:
    cached = _FIELD_CACHE.get(cls)
    if cached is None:
        cached = tuple(zip(cls.__struct_fields__, cls.__struct_encode_fields__, strict=True))  # type: ignore[attr-defined]
        _FIELD_CACHE[cls] = cached
    return cached


def encode(obj: Any) -> bytes:
    return _encoder.encode(to_wire(obj))


class Empty(msgspec.Struct):
    """Go's ``struct{}``: the value type of port and volume sets."""
