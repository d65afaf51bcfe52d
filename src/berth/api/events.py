"""``GET /events``: past events from the bounded history, then live ones."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

from berth import errdefs
from berth.api._http import Request, StreamingResponse
from berth.api.context import Context
from berth.api.httputils import encode, filters, query
from berth.api.router import Route
from berth.events import Message
from berth.types.filters import Filters
from berth.utils.timefmt import parse_timestamp

ACCEPTED = (
    "container", "event", "image", "label", "type", "volume", "network", "daemon",
    "plugin", "scope", "node", "service", "secret", "config",
)  # fmt: skip

#: keys matched against the actor's ID or ``name`` attribute (moby's events filter)
NAMED_KEYS = ("network", "volume", "daemon", "plugin", "node", "service", "secret", "config")


def _matcher(f: Filters) -> Any:
    f.validate(ACCEPTED)

    def fuzzy(key: str, *values: str) -> bool:
        wanted = f.get(key)
        return not wanted or any(v and any(v.startswith(w) for w in wanted) for v in values)

    def accept(m: Message) -> bool:
        if not f.exact_match("type", m.type):
            return False
        if f.contains("event"):
            action = m.action.split(":", 1)[0]
            if not (f.exact_match("event", m.action) or f.exact_match("event", action)):
                return False
        if f.contains("container") and (
            m.type != "container"
            or not fuzzy("container", m.actor_id, m.attributes.get("name", ""))
        ):
            return False
        if f.contains("image"):
            if m.type == "container":
                if not fuzzy("image", m.attributes.get("image", "")):
                    return False
            elif m.type != "image" or not fuzzy("image", m.actor_id, m.attributes.get("name", "")):
                return False
        # moby's fuzzyMatchName: the actor's ID or its ``name`` attribute starts with
        # one of the values, whatever the event's type (a network's events carry the
        # network's ID and name; a ``connect`` names the container only in ``container``).
        for key in NAMED_KEYS:
            if f.contains(key) and not fuzzy(key, m.actor_id, m.attributes.get("name", "")):
                return False
        if not f.match_kv_list("label", m.attributes):
            return False
        return f.exact_match("scope", "local")

    return accept


def _wire(m: Message, version: tuple[int, int]) -> dict[str, Any]:
    out = m.to_json()
    if version < (1, 52) and m.type in ("container", "image"):
        legacy: dict[str, Any] = {"status": m.action, "id": m.actor_id}
        if m.type == "container" and "image" in m.attributes:
            legacy["from"] = m.attributes["image"]
        out = {**legacy, **out}
    return out


def routes(ctx: Context) -> list[Route]:
    backend = ctx.backend

    async def events(req: Request) -> StreamingResponse:
        now = time.time_ns()
        try:
            since = parse_timestamp(query(req, "since"), now) if query(req, "since") else None
            until = parse_timestamp(query(req, "until"), now) if query(req, "until") else None
        except ValueError as e:
            raise errdefs.InvalidParameter(str(e)) from None
        accept = _matcher(filters(req))
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()

        def notify() -> None:
            loop.call_soon_threadsafe(wake.set)

        past, sub = backend.events.subscribe(accept, notify, since)
        version = req.api_version

        async def body() -> AsyncIterator[bytes]:
            try:
                for m in past:
                    if until is not None and m.time_ns > until:
                        return
                    yield encode(_wire(m, version)) + b"\n"
                yield b""
                while True:
                    if until is not None:
                        left = (until - time.time_ns()) / 1e9
                        if left <= 0:
                            return
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(wake.wait(), left)
                    else:
                        await wake.wait()
                    wake.clear()
                    while sub.queue:
                        m = sub.queue.popleft()
                        if until is not None and m.time_ns > until:
                            return
                        yield encode(_wire(m, version)) + b"\n"
            finally:
                backend.events.unsubscribe(sub)

        return StreamingResponse(body(), content_type="application/json")

    return [Route("GET", "/events", events)]
