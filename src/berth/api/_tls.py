"""TLS for the ``tcp://`` hosts, with the half-close a hijacked stream needs.

When the docker CLI has sent all of an attach's stdin (``docker run -i``, ``exec -i``)
it ends its side of the TLS session (``close_notify``, then a TCP half-close) and reads
the container's output until the daemon ends.  asyncio's TLS takes either as the end of
the connection and closes it, so that output would be lost.  Here an end read from a
client only ends what is read, as over plain TCP: the answer still goes out, and the
session closes (with this side's ``close_notify``) when the handler is done.
"""

from __future__ import annotations

import asyncio
import ssl
from asyncio import sslproto
from collections.abc import Awaitable, Callable
from typing import Any

ClientConnected = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


#: Python 3.11's TLS protocol, whose internals this overrides: typeshed describes the
#: older implementation, so it is taken untyped
_Base: Any = sslproto.SSLProtocol


class _HalfCloseTLS(_Base):  # type: ignore[misc]
    """asyncio's server-side TLS (Python 3.11's), a client's end of stream read as a
    half-close."""

    _peer_closed = False

    def eof_received(self) -> bool:
        if self._state != sslproto.SSLProtocolState.WRAPPED:
            return bool(super().eof_received())
        self._peer_closed = True
        self._do_read()
        return True  # the socket stays open for the answer

    def _do_read(self) -> None:
        super()._do_read()
        if (
            self._peer_closed
            and not self._app_reading_paused
            and self._state == sslproto.SSLProtocolState.WRAPPED
        ):
            self._call_eof_received()  # after what was sent before the end

    def _start_shutdown(self) -> None:
        app = self._app_transport
        if self._state == sslproto.SSLProtocolState.WRAPPED and app is not None and not app._closed:
            # the client's close_notify (read, not asked for by the handler): its side ended
            self._peer_closed = True
            return
        super()._start_shutdown()

    def _do_shutdown(self) -> None:
        if not self._peer_closed:
            super()._do_shutdown()
            return
        try:
            self._sslobj.unwrap()  # our close_notify: the client's will not come
        except ssl.SSLError:
            pass
        self._process_outgoing()
        self._on_shutdown_complete(None)


async def start_tls_server(
    client_connected: ClientConnected,
    host: str,
    port: int,
    context: ssl.SSLContext,
    *,
    limit: int,
    handshake_timeout: int,
) -> asyncio.Server:
    """``asyncio.start_server`` with *context*, over :class:`_HalfCloseTLS`."""
    loop = asyncio.get_running_loop()

    def protocol() -> asyncio.BaseProtocol:
        reader = asyncio.StreamReader(limit=limit, loop=loop)
        app = asyncio.StreamReaderProtocol(reader, client_connected, loop=loop)
        # no waiter: the client callback runs once the handshake is done
        tls: asyncio.BaseProtocol = _HalfCloseTLS(
            loop, app, context, None, server_side=True, ssl_handshake_timeout=handshake_timeout
        )
        return tls

    return await loop.create_server(protocol, host, port)
