"""Encoding helpers that reproduce Go's ``omitempty`` on top of msgspec.

msgspec encodes every field; the Engine API omits some fields when they are
empty.  A Struct lists those wire names in ``__omitempty__``.
:func:`to_wire` converts with msgspec (in C) and then deletes the empty
omitempty keys, visiting only the places where such Structs can occur — a
plan computed once per type from msgspec's type information.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import msgspec
import msgspec.inspect as mi

_encoder = msgspec.json.Encoder()


def _empty(value: Any) -> bool:
    # False == 0 in Python, so booleans are covered too.
    if isinstance(value, (list, dict, str)):
        return not value
    return value is None or value == 0


@dataclass(frozen=True)
class _Plan:
    """Where, inside the builtins of one type, omitempty keys may need deleting."""

    omit: frozenset[str]
    # (wire key or None for "each item"), kind ("struct", "list", "dict"), sub-plan
    children: tuple[tuple[str, str, _Plan], ...]
    #: the same by attribute name, for :meth:`unset`
    omit_attrs: tuple[str, ...] = ()
    child_attrs: tuple[tuple[str, str, _Plan], ...] = ()

    def unset(self, obj: Any) -> Any:
        """*obj* with its empty omitempty fields UNSET (msgspec leaves those out), at
        every depth: copies where something changes, *obj* itself where nothing does."""
        changes: dict[str, Any] = {}
        for attr in self.omit_attrs:
            value = getattr(obj, attr)
            if value is not msgspec.UNSET and _empty(value):
                changes[attr] = msgspec.UNSET
        for attr, kind, plan in self.child_attrs:
            value = getattr(obj, attr)
            if value is None or value is msgspec.UNSET:
                continue
            new = _unset(kind, plan, value)
            if new is not value:
                changes[attr] = new
        return msgspec.structs.replace(obj, **changes) if changes else obj

    def apply(self, data: Any) -> None:
        if not isinstance(data, dict):
            return
        for key in self.omit:
            if key in data and _empty(data[key]):
                del data[key]
        for key, kind, plan in self.children:
            value = data.get(key)
            if value is None:
                continue
            _apply(kind, plan, value)


def _apply(kind: str, plan: _Plan, value: Any) -> None:
    if kind == "struct":
        plan.apply(value)
    elif kind == "list" and isinstance(value, list):
        for item in value:
            plan.apply(item)
    elif kind == "dict" and isinstance(value, dict):
        for item in value.values():
            plan.apply(item)


def _unset(kind: str, plan: _Plan, value: Any) -> Any:
    if kind == "struct":
        return plan.unset(value) if isinstance(value, msgspec.Struct) else value
    if not value:  # most lists and maps of a listing's rows are empty
        return value
    if kind == "list" and isinstance(value, list):
        items = [plan.unset(v) if isinstance(v, msgspec.Struct) else v for v in value]
        return value if all(a is b for a, b in zip(items, value, strict=True)) else items
    if kind == "dict" and isinstance(value, dict):
        entries = {
            k: plan.unset(v) if isinstance(v, msgspec.Struct) else v for k, v in value.items()
        }
        return value if all(entries[k] is v for k, v in value.items()) else entries
    return value


def _unwrap(t: mi.Type) -> tuple[str, type] | None:
    """("struct"|"list"|"dict", Struct class) when *t* holds Structs, else None."""
    if isinstance(t, mi.UnionType):
        for member in t.types:
            found = _unwrap(member)
            if found is not None:
                return found
        return None
    if isinstance(t, mi.StructType):
        return "struct", t.cls
    if isinstance(t, mi.ListType) and isinstance(t.item_type, (mi.StructType, mi.UnionType)):
        inner = _unwrap(t.item_type)
        return ("list", inner[1]) if inner and inner[0] == "struct" else None
    if isinstance(t, mi.DictType):
        inner = _unwrap(t.value_type)
        return ("dict", inner[1]) if inner and inner[0] == "struct" else None
    return None


@functools.cache
def _plan(cls: type) -> _Plan | None:
    info = mi.type_info(cls)
    assert isinstance(info, mi.StructType)
    children = []
    child_attrs = []
    for f in info.fields:
        found = _unwrap(f.type)
        if found is None:
            continue
        kind, sub = found
        sub_plan = _plan(sub)
        if sub_plan is not None:
            children.append((f.encode_name, kind, sub_plan))
            child_attrs.append((f.name, kind, sub_plan))
    omit: frozenset[str] = getattr(cls, "__omitempty__", frozenset())
    if not omit and not children:
        return None
    omit_attrs = tuple(f.name for f in info.fields if f.encode_name in omit)
    return _Plan(omit, tuple(children), omit_attrs, tuple(child_attrs))


def to_wire(obj: Any) -> Any:
    """JSON-ready builtins for *obj* with Go's ``omitempty`` applied."""
    data = msgspec.to_builtins(obj)
    if isinstance(obj, msgspec.Struct):
        plan = _plan(type(obj))
        if plan is not None:
            plan.apply(data)
    elif isinstance(obj, list) and obj and isinstance(obj[0], msgspec.Struct):
        plan = _plan(type(obj[0]))
        if plan is not None:
            for item in data:
                plan.apply(item)
    return data


def encode(obj: Any) -> bytes:
    """``to_wire(obj)`` as JSON, without making the builtins: msgspec encodes the Structs
    (copied where an omitempty field must be left out), several times faster for a list
    of thousands of containers."""
    if isinstance(obj, msgspec.Struct):
        plan = _plan(type(obj))
        if plan is not None:
            obj = plan.unset(obj)
    elif isinstance(obj, list) and obj and isinstance(obj[0], msgspec.Struct):
        plan = _plan(type(obj[0]))
        if plan is not None:
            obj = [plan.unset(item) if type(item) is type(obj[0]) else item for item in obj]
    return _encoder.encode(obj)


class Empty(msgspec.Struct):
    """Go's ``struct{}``: the value type of port and volume sets."""
