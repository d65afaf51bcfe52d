"""HTTP to registries through http.client: kept-alive connections, TLS per host.

A connection is reused only once its response has been read to the end, and
not when the server has closed it meanwhile (its socket reads as ready).  A
reused one that still turns out closed is retried once on a fresh connection
when the request can be replayed, and the host's other idle ones are dropped:
a registry that went away (or a new one on its port) closed them all.  Failures to connect or
to speak TLS become errdefs.Unavailable worded as Go's client words them, so
that the CLI shows what a dockerd user would see.
"""

from __future__ import annotations

import contextlib
import http.client
import select
import socket
import ssl
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from berth import errdefs

_IDLE_PER_HOST = 8
_BLOCKSIZE = 1 << 20


class Readable(Protocol):
    """An upload body: http.client reads it in blocks until it returns ``b""``."""

    def read(self, n: int = -1, /) -> bytes: ...


class TransportError(errdefs.Unavailable):
    """The registry could not be spoken to at all (no HTTP answer): a reason to try
    the next endpoint (https → http for insecure registries, a mirror → the registry)."""


class Cancelled(errdefs.Unavailable):
    """A transfer stopped because its caller went away (dockerd's ``context canceled``)."""

    def __init__(self) -> None:
        super().__init__("context canceled")


class Response:
    """A response being read; ``close()`` gives a fully read connection back to the pool."""

    def __init__(
        self,
        transport: Transport,
        key: tuple[str, str, bool],
        conn: http.client.HTTPConnection,
        resp: http.client.HTTPResponse,
        url: str,
    ) -> None:
        self._transport, self._key, self._conn, self.raw = transport, key, conn, resp
        self.url = url
        self.status = resp.status
        self.reason = resp.reason
        self.headers = resp.headers
        self._done = False

    def header(self, name: str) -> str:
        return self.headers.get(name, "") or ""

    def read(self, limit: int = 16 << 20) -> bytes:
        """The whole body (at most *limit* bytes; a larger one is refused, not truncated)."""
        try:
            data = self.raw.read(limit + 1)
        except (OSError, http.client.HTTPException) as e:
            self.close(broken=True)
            raise TransportError(f"{self.url}: error reading response: {e}") from None
        if len(data) > limit:
            self.close(broken=True)
            raise errdefs.InvalidParameter(f"{self.url}: response body larger than {limit} bytes")
        self.close()
        return data

    def abort(self) -> None:
        """Shut the connection down from another thread: a read blocked on a stalled
        registry returns at once (the reader then closes the response as broken)."""
        sock = self._conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self, *, broken: bool = False) -> None:
        if self._done:
            return
        self._done = True
        if broken or not self.raw.isclosed() or self.raw.will_close:
            # not read to the end (or the server said close): the connection is spent
            self._conn.close()
            return
        self._transport.release(self._key, self._conn)


class Cancel(threading.Event):
    """A cancellation flag that also cuts the transfers it watches: ``set()`` shuts down
    the connection of every response being read under :meth:`watching`, so that a pull
    stops at once even while a registry sends nothing."""

    def __init__(self) -> None:
        super().__init__()
        self._watch_lock = threading.Lock()
        self._watched: set[Response] = set()

    def set(self) -> None:
        with self._watch_lock:
            super().set()
            for resp in self._watched:
                resp.abort()

    @contextlib.contextmanager
    def watching(self, resp: Response) -> Iterator[None]:
        """Abort *resp* if this is set while the block runs.  The connection is no
        longer touched once the block is left, so it can go back to the pool."""
        with self._watch_lock:
            if self.is_set():
                resp.abort()
            self._watched.add(resp)
        try:
            yield
        finally:
            with self._watch_lock:
                self._watched.discard(resp)


def watching(
    cancel: threading.Event | None, resp: Response
) -> contextlib.AbstractContextManager[None]:
    """``cancel.watching(resp)`` for a :class:`Cancel`; nothing for a plain flag, which the
    reader can only check between reads."""
    if isinstance(cancel, Cancel):
        return cancel.watching(resp)
    return contextlib.nullcontext()


def _alive(conn: http.client.HTTPConnection) -> bool:
    sock = conn.sock
    if sock is None:
        return False
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return False
    try:
        ready, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return False
    return not ready


def go_method(method: str) -> str:
    return method[:1] + method[1:].lower()


class Transport:
    """Connections by (scheme, host:port), TLS contexts by host."""

    def __init__(self, *, timeout: float, certs_dir: Path | None) -> None:
        self.timeout = timeout
        self._certs_dir = certs_dir
        self._lock = threading.Lock()
        self._idle: dict[tuple[str, str, bool], list[http.client.HTTPConnection]] = {}
        self._tls: dict[tuple[str, bool], ssl.SSLContext] = {}

    def tls_context(self, netloc: str, insecure: bool) -> ssl.SSLContext:
        """The system CA store plus ``<certs_dir>/<host:port>/*.crt`` and client pairs
        ``*.cert``/``*.key``; no verification for an insecure registry."""
        key = (netloc, insecure)
        with self._lock:
            ctx = self._tls.get(key)
        if ctx is not None:
            return ctx
        ctx = ssl.create_default_context()
        hostdir = self._certs_dir / netloc if self._certs_dir else None
        if hostdir is not None and hostdir.is_dir():
            try:
                for f in sorted(hostdir.iterdir()):
                    if f.suffix == ".crt":
                        ctx.load_verify_locations(cafile=str(f))
                    elif f.suffix == ".cert":
                        keyfile = f.with_suffix(".key")
                        if not keyfile.exists():
                            raise errdefs.InvalidParameter(
                                f"missing key {keyfile.name} for client certificate {f.name}"
                            )
                        ctx.load_cert_chain(str(f), str(keyfile))
                    elif f.suffix == ".key" and not f.with_suffix(".cert").exists():
                        cert = f.with_suffix(".cert").name
                        raise errdefs.InvalidParameter(
                            f"missing client certificate {cert} for key {f.name}"
                        )
            except (OSError, ssl.SSLError) as e:
                raise errdefs.InvalidParameter(f"certificates in {hostdir}: {e}") from None
        if insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        with self._lock:
            self._tls[key] = ctx
        return ctx

    def _connect(self, scheme: str, netloc: str, insecure: bool) -> http.client.HTTPConnection:
        if scheme == "https":
            return http.client.HTTPSConnection(
                netloc,
                timeout=self.timeout,
                context=self.tls_context(netloc, insecure),
                blocksize=_BLOCKSIZE,
            )
        return http.client.HTTPConnection(netloc, timeout=self.timeout, blocksize=_BLOCKSIZE)

    def _take(self, key: tuple[str, str, bool]) -> http.client.HTTPConnection | None:
        """An idle connection the server has not closed: an idle socket that reads as
        ready holds an EOF (or bytes nobody asked for) and is useless."""
        while True:
            with self._lock:
                idle = self._idle.get(key)
                conn = idle.pop() if idle else None
            if conn is None or _alive(conn):
                return conn
            conn.close()

    def _drop_idle(self, key: tuple[str, str, bool]) -> None:
        with self._lock:
            conns = self._idle.pop(key, [])
        for c in conns:
            c.close()

    def release(self, key: tuple[str, str, bool], conn: http.client.HTTPConnection) -> None:
        with self._lock:
            idle = self._idle.setdefault(key, [])
            if len(idle) < _IDLE_PER_HOST:
                idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            conns = [c for idle in self._idle.values() for c in idle]
            self._idle.clear()
        for c in conns:
            c.close()

    def send(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | Readable | None = None,
        *,
        insecure: bool = False,
    ) -> Response:
        """One request, no redirects or auth; an HTTP answer of any status is returned.
        *insecure*: TLS without verification (an insecure registry and its redirects)."""
        parts = urlsplit(url)
        scheme, netloc = parts.scheme, parts.netloc
        if scheme not in ("http", "https") or not netloc:
            raise errdefs.InvalidParameter(f"unsupported URL {url!r}")
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        key = (scheme, netloc, insecure and scheme == "https")
        replayable = body is None or isinstance(body, bytes)
        for attempt in range(2):
            conn = self._take(key) if replayable and not attempt else None
            reused = conn is not None
            if conn is None:
                conn = self._connect(scheme, netloc, key[2])
            try:
                conn.request(method, target, body=body, headers=dict(headers))
                resp = conn.getresponse()
            except (
                http.client.RemoteDisconnected,
                BrokenPipeError,
                ConnectionResetError,
                http.client.BadStatusLine,
            ) as e:
                conn.close()
                if reused:
                    self._drop_idle(key)
                    continue  # a kept-alive connection the server had closed
                raise TransportError(f'{go_method(method)} "{url}": {_words(e)}') from None
            except errdefs.BerthError:
                conn.close()
                raise
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                raise TransportError(self._describe(method, url, netloc, e)) from None
            return Response(self, key, conn, resp, url)
        raise TransportError(f'{go_method(method)} "{url}": connection closed by the registry')

    @staticmethod
    def _describe(method: str, url: str, netloc: str, e: BaseException) -> str:
        prefix = f'{go_method(method)} "{url}"'
        if isinstance(e, ssl.SSLCertVerificationError):
            return f"{prefix}: tls: failed to verify certificate: {_x509(e)}"
        if isinstance(e, ssl.SSLError):
            if "WRONG_VERSION_NUMBER" in str(e) or "record layer failure" in str(e):
                return f"{prefix}: http: server gave HTTP response to HTTPS client"
            return f"{prefix}: tls: {e.reason or e}"
        if isinstance(e, (TimeoutError, socket.timeout)):
            return f"{prefix}: dial tcp {netloc}: i/o timeout"
        if isinstance(e, socket.gaierror):
            host = urlsplit(url).hostname or netloc
            return f"{prefix}: dial tcp: lookup {host}: no such host"
        return f"{prefix}: dial tcp {netloc}: connect: {_words(e)}"


# OpenSSL's verify codes whose meaning Go's crypto/x509 words differently
_UNKNOWN_AUTHORITY = {2, 18, 19, 20, 21}  # no issuer, self-signed, not trusted
_EXPIRED, _HOSTNAME_MISMATCH, _IP_MISMATCH = 10, 62, 64


def _x509(e: ssl.SSLCertVerificationError) -> str:
    """Go's wording (what dockerd prints) for the common verification failures."""
    code = e.verify_code
    if code in _UNKNOWN_AUTHORITY:
        return "x509: certificate signed by unknown authority"
    if code == _EXPIRED:
        return "x509: certificate has expired or is not yet valid"
    if code in (_HOSTNAME_MISMATCH, _IP_MISMATCH):
        return f"x509: certificate is not valid for this name ({e.verify_message})"
    return f"x509: {e.verify_message or e}"


def _words(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return e.strerror[:1].lower() + e.strerror[1:]
    return str(e) or type(e).__name__
