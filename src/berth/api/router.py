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


class Router:
    def __init__(self) -> None:
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []

    def add(self, method: str, pattern: str, handler: Handler) -> None:
        self._routes.append((method, _compile(pattern), handler))

    def extend(self, routes: list[Route]) -> None:
        for r in routes:
            self.add(r.method, r.pattern, r.handler)

    def match(self, method: str, path: str) -> tuple[Handler, dict[str, str]] | bool:
        """The handler and path parameters, or whether the path exists for another method."""
        path_known = False
        for m, rx, handler in self._routes:
            found = rx.match(path)
            if found is None:
                continue
            if m == method:
                return handler, found.groupdict()
            path_known = True
        return path_known
