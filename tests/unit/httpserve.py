"""The HTTP server of ``berth.api._http`` on a unix socket in the test's event loop, for
tests that speak raw HTTP to it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

from berth.api._http import AnyResponse, HTTPServer, Request


def serve(
    tmp_path: Path,
    handler: Callable[[Request], Awaitable[AnyResponse]],
    test: Callable[[str], Awaitable[None]],
) -> None:
    """Run *test* with the socket's path while the server answers with *handler*."""
    sock = str(tmp_path / "api.sock")

    async def main() -> None:
        server = HTTPServer(handler, [])
        await server.listen_unix(sock)
        try:
            await asyncio.wait_for(test(sock), 30)
        finally:
            await server.close()

    asyncio.run(main())
