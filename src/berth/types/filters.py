"""The ``filters`` query argument: ``{"key": {"value": true}}`` as moby's filters.Args."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import msgspec

from berth import errdefs
from berth.utils.timefmt import parse_timestamp


class Filters:
    """Filter arguments: each key maps to a set of values, matched with OR within a key."""

    __slots__ = ("_args",)

    def __init__(self, args: Mapping[str, Iterable[str]] | None = None) -> None:
        self._args: dict[str, set[str]] = {k: set(v) for k, v in (args or {}).items()}

    @classmethod
    def from_param(cls, raw: str) -> Filters:
        """Parse the JSON query value; both the current and the legacy list form."""
        if not raw.strip():
            return cls()
        try:
            data = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            raise errdefs.InvalidParameter(f"invalid filter: {raw!r} is not valid JSON") from None
        if not isinstance(data, dict):
            raise errdefs.InvalidParameter("invalid filter: expected a JSON object")
        args: dict[str, set[str]] = {}
        for key, value in data.items():
            if isinstance(value, dict):
                args[key] = {str(k) for k, v in value.items() if v}
            elif isinstance(value, list):
                args[key] = {str(v) for v in value}
            else:
                raise errdefs.InvalidParameter(
                    f"invalid filter: value of {key!r} must be an object"
                )
        return cls(args)

    def __bool__(self) -> bool:
        return bool(self._args)

    def __repr__(self) -> str:
        return f"Filters({self._args!r})"

    def with_values(self, key: str, values: Iterable[str]) -> Filters:
        """A copy with *values* added under *key*."""
        args = {k: set(v) for k, v in self._args.items()}
        args.setdefault(key, set()).update(values)
        return Filters(args)

    def keys(self) -> list[str]:
        return list(self._args)

    def contains(self, key: str) -> bool:
        return key in self._args

    def get(self, key: str) -> list[str]:
        return sorted(self._args.get(key, ()))

    def validate(self, accepted: Iterable[str]) -> None:
        allowed = set(accepted)
        for key in self._args:
            if key not in allowed:
                raise errdefs.InvalidParameter(f"invalid filter '{key}'")

    def exact_match(self, key: str, value: str) -> bool:
        """True when *key* is absent or one of its values equals *value*."""
        values = self._args.get(key)
        return not values or value in values

    def unique_exact_match(self, key: str, value: str) -> bool:
        values = self._args.get(key)
        if not values:
            return True
        return len(values) == 1 and value in values

    def fuzzy_match(self, key: str, value: str) -> bool:
        """True when absent, or a value equals *value* or is a prefix of it."""
        values = self._args.get(key)
        if not values:
            return True
        return any(value.startswith(v) for v in values)

    def match(self, key: str, source: str) -> bool:
        """moby's ``Match``: each value is a regular expression searched in *source*."""
        values = self._args.get(key)
        if not values or source in values:  # an exact match wins, as in moby
            return True
        for v in values:
            try:
                if re.search(v, source):
                    return True
            except re.error:
                continue
        return False

    def match_kv_list(self, key: str, sources: Mapping[str, str] | None) -> bool:
        """Every value ``k`` or ``k=v`` must be present in *sources* (labels)."""
        values = self._args.get(key)
        if not values:
            return True
        if not sources:
            return False
        for v in values:
            k, sep, want = v.partition("=")
            if k not in sources:
                return False
            if sep and sources[k] != want:
                return False
        return True

    def get_bool_or_default(self, key: str, default: bool) -> bool:
        values = self._args.get(key)
        if values is None:
            return default
        if not values:
            raise errdefs.InvalidParameter(f"invalid filter '{key}'")
        # moby's GetBoolOrDefault: exactly "true"/"1" or "false"/"0", not both.
        is_true = "true" in values or "1" in values
        is_false = "false" in values or "0" in values
        if is_true == is_false:
            shown = " ".join(sorted(values))
            raise errdefs.InvalidParameter(f"invalid filter '{key}=[{shown}]'")
        return is_true


def until_filter(filters: Filters) -> int | None:
    """The prune filters' ``until`` (a timestamp or a Go duration ago) in ns, or None."""
    values = filters.get("until")
    if len(values) > 1:
        raise errdefs.InvalidParameter("more than one until filter specified")
    if not values:
        return None
    try:
        return parse_timestamp(values[0])
    except ValueError:
        raise errdefs.InvalidParameter(f"invalid filter 'until={values[0]}'") from None
