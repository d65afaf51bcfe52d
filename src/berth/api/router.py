"""The route table: method + path pattern → handler, first match wins."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from berth.api._http import AnyResponse, Request

Handler = Callable[[Request], Awaitable[AnyResponse]]

_PARAM = re.compile(r"\{(\w+)(?::([^}]+))?\}")


def _compile(pattern: str) -> re.Pattern[str]:
    out = []
    pos = 0
    for m in _PARAM.finditer(pattern):
        out.append(re.escape(pattern[pos : m.start()]))
        out.append(f"(?P<{m.group(1)}>{m.group(2) or '[^/]+'})")
        pos = m.end()
    out.append(re.escape(pattern[pos:]))
    return re.compile("^" + "".join(out) + "$")


@dataclass(frozen=True)
class Route:
    method: str
    pattern: str
    handler: Handler


_Entry = tuple[str, re.Pattern[str], Handler]


def _first_segment(path: str) -> str:
    return path[1:].split("/", 1)[0]


class Router:
    """Routes are bucketed by their literal first path segment ("containers"),
    so a request is matched against a handful of patterns, not all of them."""

    def __init__(self) -> None:
        self._buckets: dict[str, list[_Entry]] = {}

    def add(self, method: str, pattern: str, handler: Handler) -> None:
        if "{" in _first_segment(pattern):
            raise ValueError(f"route {pattern}: the first path segment must be literal")
        entry = (method, _compile(pattern), handler)
        self._buckets.setdefault(_first_segment(pattern), []).append(entry)

    def extend(self, routes: list[Route]) -> None:
        for r in routes:
            self.add(r.method, r.pattern, r.handler)

    def match(self, method: str, path: str) -> tuple[Handler, dict[str, str]] | bool:
        """The handler and path parameters, or whether the path exists for another method."""
        path_known = False
        for m, rx, handler in self._buckets.get(_first_segment(path), ()):
            found = rx.match(path)
            if found is None:
                continue
            if m == method:
                return handler, found.groupdict()
            path_known = True
        return path_known
