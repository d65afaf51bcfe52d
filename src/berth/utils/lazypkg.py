"""Importing a package's submodules without its ``__init__``.

pyroute2's ``__init__`` imports every family it speaks (NDB with sqlite3, IPDB,
wireguard, nl80211, plan9...) and prometheus_client's its HTTP servers; berthd uses
rtnetlink's message classes and the metric types, and the rest was 11 MB of its idle RSS. A package
registered here is importable through its submodules at their own cost; the first use of
the package's own namespace (``from pyroute2 import NDB``) runs its ``__init__`` then, so
nothing else that imports it sees a difference.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import Any


def skip_init(name: str) -> None:
    """Register package *name* (unless imported already) with its ``__init__`` deferred."""
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        raise ImportError(f"{name} is not an importable package", name=name)
    module = importlib.util.module_from_spec(spec)
    loader = spec.loader

    def __getattr__(attr: str) -> Any:  # the module-level hook of PEP 562
        if attr.startswith("__"):  # importlib's probes of an unset dunder
            raise AttributeError(attr)
        if importlib.util.find_spec(f"{name}.{attr}") is not None:
            # a submodule (``from . import values`` asks this first): that alone
            return importlib.import_module(f"{name}.{attr}")
        del module.__dict__["__getattr__"]
        loader.exec_module(module)
        return getattr(module, attr)

    module.__dict__["__getattr__"] = __getattr__
    sys.modules[name] = module
