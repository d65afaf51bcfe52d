"""The registry client: one repository on one registry at a time, as pull and push need it.

``RegistryClient`` holds what outlives a pull — daemon settings (insecure
registries, mirrors, per-registry CAs), kept-alive connections and the token
cache.  ``RegistryClient.session`` gives a ``RepositorySession``: the endpoint
is chosen once (mirrors first for Docker Hub pulls; https, then http for an
insecure registry — loopback is insecure, as in dockerd), the challenge of
``GET /v2/`` read once, and every request after carries the right
Authorization, re-negotiated only when a 401 says a cached token went stale.

Blob and manifest contents are checked against their digests here, so a
caller never holds unverified bytes it believes verified.
"""

from __future__ import annotations

import hashlib
import http.client
import ipaddress
import json
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote, urlencode, urljoin, urlsplit

from berth import errdefs
from berth.distribution import _errors
from berth.distribution._auth import (
    CLIENT_ID,
    INDEX_SERVER,
    AuthConfig,
    Challenge,
    Token,
    TokenCache,
    parse_challenges,
    token_from_response,
)
from berth.distribution._transport import (
    Cancelled,
    Readable,
    Response,
    Transport,
    TransportError,
    go_method,
    watching,
)
from berth.distribution.manifest import (
    ALL_MANIFEST_TYPES,
    MAX_MANIFEST_SIZE,
    Manifest,
    detect_media_type,
    parse_manifest,
    select_platform,
    valid_digest,
)
from berth.image.reference import DEFAULT_DOMAIN, Reference

__all__ = [
    "ALL_MANIFEST_TYPES",
    "AuthConfig",
    "Cancelled",
    "DigestMismatch",
    "Manifest",
    "RegistryClient",
    "RepositorySession",
    "parse_manifest",
    "select_platform",
]

#: where Docker Hub's registry API lives (dockerd's ``DefaultV2Registry``)
DOCKER_HUB_REGISTRY = "https://registry-1.docker.io"
_LOOPBACK = (ipaddress.ip_network("::1/128"), ipaddress.ip_network("127.0.0.0/8"))
_REDIRECTS = (301, 302, 303, 307, 308)
_MAX_REDIRECTS = 10
_CHUNK = 1 << 20
#: how long an insecure registry's failed https is remembered before trying it again
_HTTPS_RETRY_AFTER = 300.0


@dataclass(frozen=True)
class Endpoint:
    base: str  # scheme://host[:port][/prefix], no trailing slash
    insecure: bool = False  # TLS without verification
    mirror: bool = False

    @property
    def netloc(self) -> str:
        return urlsplit(self.base).netloc


def _host_of(netloc: str) -> str:
    """``[::1]:5000`` → ``::1``; ``localhost:5000`` → ``localhost``."""
    if netloc.startswith("["):
        return netloc[1 : netloc.find("]")] if "]" in netloc else netloc
    return netloc.rsplit(":", 1)[0] if netloc.count(":") == 1 else netloc


def _strip_scheme(value: str) -> str:
    low = value.lower()
    for prefix in ("http://", "https://"):
        if low.startswith(prefix):
            return value[len(prefix) :]
    return value


class DigestMismatch(errdefs.InvalidParameter):
    """A blob's bytes do not hash to its digest (the blob is bad, not the request)."""


class RegistryClient:
    """Registries as the daemon is configured to reach them; share one per daemon."""

    def __init__(
        self,
        *,
        insecure: Iterable[str] = (),
        mirrors: Iterable[str] = (),
        certs_dir: Path | None = None,
        timeout: float = 30.0,
        user_agent: str = "berth/0.1",
        max_concurrent_downloads: int = 3,
        max_concurrent_uploads: int = 5,
        max_download_attempts: int = 5,
    ) -> None:
        self.user_agent = user_agent
        #: dockerd's ``--max-concurrent-downloads`` / ``--max-concurrent-uploads``
        self.max_concurrent_downloads = max(1, max_concurrent_downloads)
        self.max_concurrent_uploads = max(1, max_concurrent_uploads)
        #: dockerd's ``--max-download-attempts``: tries of one blob transfer in a pull
        self.max_download_attempts = max(1, max_download_attempts)
        self._insecure_names: set[str] = set()
        self._insecure_nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = list(_LOOPBACK)
        for given in insecure:
            entry = _strip_scheme(given.strip()).rstrip("/")
            if "://" in entry:
                raise errdefs.InvalidParameter(
                    f"insecure registry {entry} should not contain '://'"
                )
            try:
                # Only a CIDR is a network; a bare address is a registry name, as for
                # dockerd (``10.0.0.1`` does not cover ``10.0.0.1:5000``).
                if "/" not in entry:
                    raise ValueError(entry)
                self._insecure_nets.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                self._insecure_names.add("docker.io" if entry == "index.docker.io" else entry)
        self.mirrors: tuple[str, ...] = tuple(self._validate_mirror(m) for m in mirrors)
        self._transport = Transport(timeout=timeout, certs_dir=certs_dir)
        self.tokens = TokenCache()
        self._lock = threading.Lock()
        self._resolved: dict[str, bool] = {}
        self._https_failed: dict[str, float] = {}

    @staticmethod
    def _validate_mirror(url: str) -> str:
        parts = urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise errdefs.InvalidParameter(
                f"invalid mirror: {url!r} must be an http:// or https:// URL"
            )
        if parts.query or parts.fragment or parts.username or parts.password:
            raise errdefs.InvalidParameter(
                f"invalid mirror: {url!r} may not carry a query, fragment or credentials"
            )
        return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"

    def close(self) -> None:
        self._transport.close()

    # ---- which endpoints a registry has

    def is_insecure(self, netloc: str) -> bool:
        """dockerd's ``isSecureIndex`` negated: named insecure, or resolving into an
        insecure CIDR (loopback always is).  Docker Hub never is."""
        if netloc in (DEFAULT_DOMAIN, "index.docker.io"):
            return False
        if netloc in self._insecure_names:
            return True
        host = _host_of(netloc)
        with self._lock:
            known = self._resolved.get(netloc)
        if known is not None:
            return known
        addrs: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
        try:
            addrs = [ipaddress.ip_address(host)]
        except ValueError:
            if host.lower() == "localhost":
                addrs = [ipaddress.ip_address("127.0.0.1")]
            else:
                try:
                    infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
                    addrs = [ipaddress.ip_address(str(i[4][0]).split("%")[0]) for i in infos]
                except (OSError, ValueError):
                    addrs = []
        result = any(a in net for a in addrs for net in self._insecure_nets)
        with self._lock:
            self._resolved[netloc] = result
        return result

    def endpoints(self, domain: str, *, pull: bool = True) -> list[Endpoint]:
        """Where to talk to *domain*, in order (``lookupV2Endpoints``): mirrors (Docker
        Hub pulls only), then the registry over https, then http if it is insecure."""
        domain = domain or DEFAULT_DOMAIN
        if domain in (DEFAULT_DOMAIN, "index.docker.io"):
            eps = [
                Endpoint(m, self.is_insecure(urlsplit(m).netloc), mirror=True)
                for m in (self.mirrors if pull else ())
            ]
            return [*eps, Endpoint(DOCKER_HUB_REGISTRY)]
        if not self.is_insecure(domain):
            return [Endpoint(f"https://{domain}")]
        https, http = Endpoint(f"https://{domain}", True), Endpoint(f"http://{domain}", True)
        with self._lock:
            failed = self._https_failed.get(domain, 0.0)
        if time.monotonic() - failed < _HTTPS_RETRY_AFTER:
            return [http, https]
        return [https, http]

    def _note_transport(self, ep: Endpoint, ok: bool) -> None:
        if ep.insecure and not ep.mirror:
            domain = ep.netloc
            with self._lock:
                if ep.base.startswith("https://") and not ok:
                    self._https_failed[domain] = time.monotonic()
                elif ep.base.startswith("https://"):
                    self._https_failed.pop(domain, None)

    # ---- sessions and login

    def session(
        self,
        reference: Reference,
        *,
        auth: AuthConfig | None,
        actions: Sequence[str] = ("pull",),
    ) -> RepositorySession:
        """A session on *reference*'s repository; nothing is sent until first use."""
        pull_only = set(actions) <= {"pull"}
        return RepositorySession(
            self,
            reference,
            auth or AuthConfig(),
            tuple(actions),
            self.endpoints(reference.domain, pull=pull_only),
        )

    def check_login(self, registry: str, auth: AuthConfig) -> str:
        """``POST /auth``: "Login Succeeded", or Unauthorized with dockerd's message."""
        return self.login(registry, auth)[0]

    def login(self, registry: str, auth: AuthConfig) -> tuple[str, str]:
        """("Login Succeeded", identity token or ``""``): credentials are tried against
        the registry itself, never a mirror; endpoints in order until one answers."""
        server = registry or auth.serveraddress or INDEX_SERVER
        if not server.lower().startswith(("http://", "https://")):
            server = "https://" + server
        netloc = urlsplit(server).netloc
        if not netloc:
            raise errdefs.InvalidParameter(f"unable to parse server address {server!r}")
        last: errdefs.BerthError | None = None
        for ep in self.endpoints(netloc, pull=False):
            try:
                token = _LoginAttempt(self, ep, auth).run()
            except errdefs.Unauthorized:
                raise
            except errdefs.BerthError as e:
                last = e
                continue
            return "Login Succeeded", token
        assert last is not None
        raise last

    # ---- plumbing shared with sessions

    def send(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        body: bytes | Readable | None,
        *,
        insecure: bool,
        follow: bool = True,
    ) -> Response:
        """Send, following redirects for GET and HEAD; Authorization is not carried
        to another host (as Go's client drops it)."""
        headers = {"User-Agent": self.user_agent, **headers}
        origin = urlsplit(url).netloc
        for _ in range(_MAX_REDIRECTS + 1):
            resp = self._transport.send(method, url, headers, body, insecure=insecure)
            location = resp.header("Location")
            if not (
                follow and method in ("GET", "HEAD") and resp.status in _REDIRECTS and location
            ):
                return resp
            _drain(resp)
            url = urljoin(url, location)
            if urlsplit(url).netloc != origin:
                headers.pop("Authorization", None)
        raise errdefs.Unavailable(f'{go_method(method)} "{url}": stopped after 10 redirects')

    # ---- requests outside a repository (the v1 search index)

    @property
    def certs_dir(self) -> Path | None:
        """Where per-registry CA files are looked for (``<certs_dir>/<host:port>/``)."""
        return self._transport._certs_dir

    def get_authorized(
        self,
        ep: Endpoint,
        path: str,
        auth: AuthConfig,
        *,
        scopes: tuple[str, ...] = (),
        headers: dict[str, str] | None = None,
    ) -> Response:
        """GET *path* on *ep* outside any repository session.

        Basic credentials go with the first request, as dockerd's v1 client sends them;
        a 401's challenge is answered once (Bearer: a token for *scopes*, cached as a
        session's are; Basic: the credentials, when none were sent).  A transport failure
        is remembered (an insecure registry's https is then tried after http) and raised.
        """
        url = ep.base + path
        sent = dict(headers or {})
        basic = auth.basic()
        if basic:
            sent["Authorization"] = basic
        try:
            resp = self.send("GET", url, sent, None, insecure=ep.insecure)
        except TransportError:
            self._note_transport(ep, ok=False)
            raise
        self._note_transport(ep, ok=True)
        authz = _Authorizer(self, ep, auth)
        if resp.status != 401 or not authz.set_challenge(resp):
            return resp
        assert authz.challenge is not None
        if authz.challenge.scheme == "basic" and basic:
            return resp  # these credentials were refused
        _drain(resp)
        value, cached = authz.header("GET", url, scopes)
        sent["Authorization"] = value
        resp = self.send("GET", url, sent, None, insecure=ep.insecure)
        if resp.status == 401 and cached:
            authz.drop(scopes)  # stale: the next search fetches a new one
        return resp

    # ---- what the daemon was configured with, for docker info

    def service_config(self) -> dict[str, Any]:
        """``docker info``'s RegistryConfig as dockerd's ``ServiceConfig``: configured CIDRs
        then loopback's, insecure registries by name, Docker Hub with its mirrors."""
        mirrors = [m + "/" for m in self.mirrors]
        cidrs: list[str] = []
        for net in [*self._insecure_nets[len(_LOOPBACK) :], *_LOOPBACK]:
            if str(net) not in cidrs:
                cidrs.append(str(net))
        index: dict[str, dict[str, Any]] = {
            name: {"Name": name, "Mirrors": [], "Secure": False, "Official": False}
            for name in self._insecure_names
        }
        index[DEFAULT_DOMAIN] = {
            "Name": DEFAULT_DOMAIN,
            "Mirrors": mirrors,
            "Secure": True,
            "Official": True,
        }
        return {
            "InsecureRegistryCIDRs": cidrs,
            "IndexConfigs": dict(sorted(index.items())),
            "Mirrors": mirrors,
        }


def _error(resp: Response, body: bytes | None = None) -> errdefs.BerthError:
    """The error a response means, reading its body (bounded) if not given."""
    if body is None:
        try:
            body = resp.read(1 << 20)
        except errdefs.BerthError:
            body = b""
    bearer = next(
        (
            c
            for c in parse_challenges(resp.headers.get_all("WWW-Authenticate") or [])
            if c.scheme == "bearer" and "error" in c.params
        ),
        None,
    )
    return _errors.from_response(
        resp.status,
        body,
        bearer_error=(bearer.params["error"], bearer.params.get("error_description", ""))
        if bearer
        else None,
    )


class _Authorizer:
    """The Authorization for requests to one endpoint, from its ``/v2/`` challenge."""

    def __init__(self, client: RegistryClient, ep: Endpoint, auth: AuthConfig) -> None:
        self.client, self.ep, self.auth = client, ep, auth
        self.challenge: Challenge | None = None
        self.refresh_token = ""

    def ping(self) -> Response:
        """``GET /v2/`` without credentials: any HTTP answer proves the transport."""
        try:
            resp = self.client.send(
                "GET", self.ep.base + "/v2/", {}, None, insecure=self.ep.insecure
            )
        except TransportError:
            self.client._note_transport(self.ep, ok=False)
            raise
        self.client._note_transport(self.ep, ok=True)
        self.set_challenge(resp)
        return resp

    def set_challenge(self, resp: Response) -> bool:
        """Take the challenge of a 401; whether it is new."""
        if resp.status != 401:
            return False
        challenges = parse_challenges(resp.headers.get_all("WWW-Authenticate") or [])
        chosen = next((c for c in challenges if c.scheme == "bearer"), None) or next(
            (c for c in challenges if c.scheme == "basic"), None
        )
        if chosen is None:
            return False
        new = self.challenge is None or (chosen.scheme, chosen.params.get("realm")) != (
            self.challenge.scheme,
            self.challenge.params.get("realm"),
        )
        self.challenge = chosen
        return new

    def _key(self, scopes: tuple[str, ...]) -> tuple[str, str, tuple[str, ...], str]:
        assert self.challenge is not None
        p = self.challenge.params
        return (p.get("realm", ""), p.get("service", ""), scopes, self.auth.cache_key())

    def header(self, method: str, url: str, scopes: tuple[str, ...]) -> tuple[str, bool]:
        """(Authorization value or ``""``, whether it came from a cache)."""
        ch = self.challenge
        if ch is None:
            return "", False
        if ch.scheme == "basic":
            basic = self.auth.basic()
            if not basic:
                raise _errors.make(
                    errdefs.Unauthorized,
                    f'{go_method(method)} "{url}": no basic auth credentials',
                    "UNAUTHORIZED",
                    401,
                )
            return basic, False
        if self.auth.registrytoken:
            return "Bearer " + self.auth.registrytoken, False
        key = self._key(scopes)
        tok = self.client.tokens.get(key)
        if tok is not None:
            return "Bearer " + tok.token, True
        tok = self.fetch_token(scopes, offline=False)
        self.client.tokens.put(key, tok)
        return "Bearer " + tok.token, False

    def drop(self, scopes: tuple[str, ...]) -> None:
        if self.challenge is not None and self.challenge.scheme == "bearer":
            self.client.tokens.drop(self._key(scopes))

    def fetch_token(self, scopes: tuple[str, ...], *, offline: bool) -> Token:
        """A token from the challenge's realm: OAuth2 POST with an identity token,
        else GET with Basic credentials when there are any (token.md, oauth.md)."""
        assert self.challenge is not None
        realm = self.challenge.params.get("realm", "")
        service = self.challenge.params.get("service", "")
        if not realm.lower().startswith(("http://", "https://")):
            raise errdefs.Unauthorized(f"invalid token auth challenge realm {realm!r}")
        if self.auth.identitytoken:
            form = {
                "grant_type": "refresh_token",
                "refresh_token": self.auth.identitytoken,
                "client_id": CLIENT_ID,
            }
            if service:
                form["service"] = service
            if scopes:
                form["scope"] = " ".join(scopes)
            if offline:
                form["access_type"] = "offline"
            body = urlencode(form).encode()
            resp = self.client.send(
                "POST",
                realm,
                {
                    "Content-Type": "application/x-www-form-urlencoded",
                    "Content-Length": str(len(body)),
                },
                body,
                insecure=self.ep.insecure,
            )
        else:
            params: list[tuple[str, str]] = []
            if service:
                params.append(("service", service))
            params += [("scope", s) for s in scopes]
            headers: dict[str, str] = {}
            if offline:
                params += [("offline_token", "true"), ("client_id", CLIENT_ID)]
            if self.auth.basic():
                params.append(("account", self.auth.username))
                headers["Authorization"] = self.auth.basic()
            sep = "&" if "?" in realm else "?"
            url = realm + (sep + urlencode(params) if params else "")
            resp = self.client.send("GET", url, headers, None, insecure=self.ep.insecure)
        if not 200 <= resp.status < 300:
            err = _error(resp)
            if resp.status == 401 or isinstance(err, errdefs.Unauthorized):
                raise _errors.make(errdefs.Unauthorized, str(err), "UNAUTHORIZED", resp.status)
            raise err
        tok = token_from_response(resp.read(1 << 20))
        if tok.refresh_token:
            self.refresh_token = tok.refresh_token
        return tok


class _LoginAttempt:
    """dockerd's ``loginV2`` against one endpoint."""

    def __init__(self, client: RegistryClient, ep: Endpoint, auth: AuthConfig) -> None:
        self.client, self.ep, self.auth = client, ep, auth

    def run(self) -> str:
        authz = _Authorizer(self.client, self.ep, self.auth)
        ping = authz.ping()
        ping.read(1 << 16)
        url = self.ep.base + "/v2/"
        headers: dict[str, str] = {}
        ch = authz.challenge
        if ch is not None and ch.scheme == "bearer" and not self.auth.registrytoken:
            try:
                tok = authz.fetch_token((), offline=True)
            except errdefs.Unauthorized as e:
                raise _errors.make(
                    errdefs.Unauthorized, f'Get "{url}": {e}', "UNAUTHORIZED", 401
                ) from None
            headers["Authorization"] = "Bearer " + tok.token
        elif ch is not None:
            headers["Authorization"] = authz.header("GET", url, ())[0]
        if ch is None:
            resp = ping
        else:
            resp = self.client.send("GET", url, headers, None, insecure=self.ep.insecure)
            resp.read(1 << 16)
        if resp.status == 200:
            return authz.refresh_token
        msg = f"login attempt to {url} failed with status: {resp.status} {resp.reason}"
        if resp.status == 401:
            raise _errors.make(errdefs.Unauthorized, msg, "UNAUTHORIZED", 401)
        raise _errors.make(errdefs.System, msg, "", resp.status)


def _drain(resp: Response) -> None:
    """Read a small body to the end so the connection can be reused."""
    try:
        resp.read(1 << 16)
    except errdefs.BerthError:
        resp.close(broken=True)


class _Limited:
    """Exactly *size* bytes of *src* for an upload body: http.client would otherwise
    read to EOF, and a short source must fail, not leave the registry waiting."""

    def __init__(self, src: BinaryIO, size: int) -> None:
        self._src, self._left = src, size

    def read(self, n: int = -1, /) -> bytes:
        if self._left <= 0:
            return b""
        want = self._left if n < 0 else min(n, self._left)
        data = self._src.read(want)
        if not data:
            raise errdefs.InvalidParameter(f"blob source ended {self._left} bytes short")
        self._left -= len(data)
        return data


def _hasher(digest: str) -> Any:  # hashlib's object type is private
    return hashlib.new(digest.split(":", 1)[0])


class RepositorySession:
    """One repository on one registry: endpoint and challenge found once, tokens cached
    per scope.  Safe to share between threads that download layers concurrently."""

    def __init__(
        self,
        client: RegistryClient,
        reference: Reference,
        auth: AuthConfig,
        actions: tuple[str, ...],
        endpoints: list[Endpoint],
    ) -> None:
        self.client = client
        self.reference = reference
        self.name = reference.path
        self.auth = auth
        self.scopes = (f"repository:{reference.path}:{','.join(actions)}",)
        self._endpoints = endpoints
        self._index = 0
        self._authz: _Authorizer | None = None
        self._lock = threading.RLock()

    @property
    def endpoint(self) -> Endpoint:
        return self._ready().ep

    def _ready(self) -> _Authorizer:
        """Ping endpoints in order until one answers over HTTP at all."""
        with self._lock:
            if self._authz is not None:
                return self._authz
            last: errdefs.BerthError | None = None
            while self._index < len(self._endpoints):
                authz = _Authorizer(self.client, self._endpoints[self._index], self.auth)
                try:
                    authz.ping().read(1 << 16)
                except TransportError as e:
                    last = e
                    self._index += 1
                    continue
                self._authz = authz
                return authz
            assert last is not None
            raise last

    def _next_endpoint(self) -> bool:
        """Leave a mirror that failed for the next endpoint; False when none is left."""
        with self._lock:
            if self._authz is None or not self._authz.ep.mirror:
                return False
            if self._index + 1 >= len(self._endpoints):
                return False
            self._index += 1
            self._authz = None
            return True

    def _url(self, path: str) -> str:
        return path if "://" in path else self._ready().ep.base + path

    def request(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        body: bytes | BinaryIO | None = None,
        scopes: tuple[str, ...] = (),
    ) -> Response:
        """A request with authorization; one retry after a 401 when a stale cached
        token, or a challenge not seen at ``/v2/``, may be the cause."""
        authz = self._ready()
        url = self._url(path)
        scopes = scopes or self.scopes
        start: int | None = None
        if body is not None and not isinstance(body, bytes) and body.seekable():
            start = body.tell()
        for attempt in range(2):
            with self._lock:
                value, cached = authz.header(method, url, scopes)
            h = dict(headers or {})
            if value:
                h["Authorization"] = value
            send_body: bytes | Readable | None = body
            if body is not None and not isinstance(body, bytes):
                send_body = _Limited(body, int(h.get("Content-Length", "0")))
            resp = self.client.send(method, url, h, send_body, insecure=authz.ep.insecure)
            if resp.status != 401 or attempt:
                return resp
            err_body = b""
            if method == "HEAD":
                resp.close()
            else:
                err_body = resp.read(1 << 20)
            with self._lock:
                new = authz.set_challenge(resp)
                if cached:
                    authz.drop(scopes)
            replayable = body is None or isinstance(body, bytes) or start is not None
            insufficient = any(
                c.params.get("error") == "insufficient_scope"
                for c in parse_challenges(resp.headers.get_all("WWW-Authenticate") or [])
            )
            if not (new or cached) or insufficient or not replayable:
                raise _error(resp, err_body)
            if start is not None and body is not None and not isinstance(body, bytes):
                body.seek(start)
        raise AssertionError("unreachable")

    # ---- manifests

    def get_manifest(
        self, ref: str, accept: Sequence[str] = ALL_MANIFEST_TYPES
    ) -> tuple[bytes, str, str]:
        """(raw, media type, digest) of the manifest *ref* (tag or digest) names.

        By digest the bytes are verified; larger than 4 MiB is refused; not found is
        NotFound worded as dockerd's pull words it."""
        is_digest = ":" in ref
        if is_digest and not valid_digest(ref):
            raise errdefs.InvalidParameter(f"invalid digest {ref!r}")
        while True:
            try:
                resp = self.request(
                    "GET", f"/v2/{self.name}/manifests/{ref}", headers={"Accept": ", ".join(accept)}
                )
                if resp.status != 200:
                    raise self._manifest_error(_error(resp), ref)
            except (
                errdefs.NotFound,
                errdefs.Unavailable,
                errdefs.Unauthorized,
                errdefs.Forbidden,
            ) as e:
                if isinstance(e, errdefs.BerthError) and self._next_endpoint():
                    continue
                if _errors.code_of(e) == "DENIED":
                    raise self._manifest_error(e, ref) from None
                raise
            break
        length = resp.header("Content-Length")
        if length.isdigit() and int(length) > MAX_MANIFEST_SIZE:
            resp.close(broken=True)
            raise errdefs.InvalidParameter(self._too_large(ref))
        try:
            raw = resp.read(MAX_MANIFEST_SIZE)
        except errdefs.InvalidParameter:
            raise errdefs.InvalidParameter(self._too_large(ref)) from None
        media_type = detect_media_type(raw, resp.header("Content-Type")) if raw.strip() else ""
        if is_digest:
            h = _hasher(ref)
            h.update(raw)
            if f"{ref.split(':', 1)[0]}:{h.hexdigest()}" != ref:
                raise errdefs.InvalidParameter(f"manifest verification failed for digest {ref}")
            return raw, media_type, ref
        return raw, media_type, "sha256:" + hashlib.sha256(raw).hexdigest()

    def _too_large(self, ref: str) -> str:
        return (
            f"manifest {self._familiar(ref)} is larger than the limit of {MAX_MANIFEST_SIZE} bytes"
        )

    def _familiar(self, ref: str) -> str:
        r = self.reference
        if ":" in ref:
            return Reference(r.domain, r.path, "", ref).familiar()
        return Reference(r.domain, r.path, ref).familiar()

    def _manifest_error(self, err: errdefs.BerthError, ref: str) -> errdefs.BerthError:
        """dockerd's ``notFoundError``: DENIED, MANIFEST_UNKNOWN and NAME_UNKNOWN are
        NotFound with the image named; other errors pass as they are."""
        code = _errors.code_of(err)
        status = err.status if isinstance(err, _errors._Registry) else 0
        if code == "" and status == 404:
            code = "MANIFEST_UNKNOWN"
        name = self.reference.familiar_name()
        cause = err.first if isinstance(err, _errors._Registry) and err.first else str(err)
        if code == "DENIED":
            msg = (
                f"pull access denied for {name}, repository does not exist or may require "
                f"'docker login': {cause}"
            )
        elif code == "MANIFEST_UNKNOWN":
            msg = f"manifest for {self._familiar(ref)} not found: {cause}"
        elif code == "NAME_UNKNOWN":
            msg = f"repository {name} not found: {cause}"
        else:
            return err
        # The cause stays the error's first: translated twice, the message is the same.
        return _errors.make(errdefs.NotFound, msg, code, status, cause)

    def put_manifest(self, tag_or_digest: str, raw: bytes, media_type: str) -> str:
        """Push a manifest under a tag (or its digest); returns its digest."""
        digest = "sha256:" + hashlib.sha256(raw).hexdigest()
        if ":" in tag_or_digest:
            h = _hasher(tag_or_digest) if valid_digest(tag_or_digest) else None
            if h is None:
                raise errdefs.InvalidParameter(f"invalid digest {tag_or_digest!r}")
            h.update(raw)
            if f"{tag_or_digest.split(':', 1)[0]}:{h.hexdigest()}" != tag_or_digest:
                raise errdefs.InvalidParameter(
                    f"manifest content does not match digest {tag_or_digest}"
                )
            digest = tag_or_digest
        resp = self.request(
            "PUT",
            f"/v2/{self.name}/manifests/{tag_or_digest}",
            headers={"Content-Type": media_type, "Content-Length": str(len(raw))},
            body=raw,
        )
        if resp.status not in (200, 201, 202):
            raise _error(resp)
        resp.read(1 << 20)
        return digest

    def tags(self) -> list[str]:
        """Every tag, following ``Link: <...>; rel="next"`` pages."""
        out: list[str] = []
        path = f"/v2/{self.name}/tags/list"
        seen: set[str] = set()
        while path and path not in seen:
            seen.add(path)
            resp = self.request("GET", path)
            if resp.status != 200:
                err = _error(resp)
                if _errors.code_of(err) == "NAME_UNKNOWN":
                    raise _errors.make(
                        errdefs.NotFound,
                        f"repository {self.reference.familiar_name()} not found: {err}",
                        "NAME_UNKNOWN",
                        resp.status,
                    )
                raise err
            link = resp.header("Link")
            doc = _json(resp.read(16 << 20), "tags list")
            page = doc.get("tags") or []
            if not isinstance(page, list) or not all(isinstance(t, str) for t in page):
                raise errdefs.InvalidParameter("invalid tags list from registry")
            out += page
            path = _next_link(link, self._url(path))
        return out

    # ---- blobs

    def head_blob(self, digest: str) -> int | None:
        """The blob's size, or None when the repository does not have it."""
        _check_digest(digest)
        resp = self.request("HEAD", f"/v2/{self.name}/blobs/{digest}")
        resp.close()
        if resp.status == 404:
            return None
        if resp.status != 200:
            raise _error(resp, b"")
        length = resp.header("Content-Length")
        return int(length) if length.isdigit() else 0

    def fetch_blob(
        self,
        digest: str,
        dest: BinaryIO,
        *,
        progress: Callable[[int, int], None] | None = None,
        offset: int = 0,
        cancel: threading.Event | None = None,
    ) -> int:
        """Stream the blob into *dest* while hashing; returns the bytes written by this call.

        With *offset* > 0, *dest* already holds that many bytes (it must be readable and
        seekable, e.g. opened ``r+b``): they are hashed and the rest asked for with
        Range.  A digest mismatch empties *dest* and raises DigestMismatch.  Once
        *cancel* is set the transfer stops with Cancelled, what arrived kept in *dest*
        (a ``_transport.Cancel`` also cuts a read that is waiting on the registry)."""
        _check_digest(digest)
        h = _hasher(digest)
        if offset:
            dest.seek(0)
            left = offset
            while left:
                chunk = dest.read(min(left, _CHUNK))
                if not chunk:
                    raise errdefs.InvalidParameter(
                        f"resume offset {offset} is beyond the partial blob"
                    )
                h.update(chunk)
                left -= len(chunk)
            dest.seek(offset)
            dest.truncate()
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        resp = self.request("GET", f"/v2/{self.name}/blobs/{digest}", headers=headers)
        written = 0
        have = offset
        if resp.status == 416 and offset:
            resp.read(1 << 16)  # nothing past the offset: the partial blob is whole
            total = offset
        elif resp.status in (200, 206):
            if resp.status == 200 and offset:  # Range ignored: start again
                h, have = _hasher(digest), 0
                dest.seek(0)
                dest.truncate()
            elif resp.status == 206 and not resp.header("Content-Range").startswith(
                f"bytes {offset}-"
            ):
                resp.close(broken=True)
                raise errdefs.Unavailable(
                    f"registry answered range {resp.header('Content-Range')!r} for bytes={offset}-"
                )
            length = resp.header("Content-Length")
            total = have + int(length) if length.isdigit() else -1
            buf = bytearray(_CHUNK)
            view = memoryview(buf)
            try:
                with watching(cancel, resp):
                    while True:
                        n = resp.raw.readinto(buf)
                        if n:
                            h.update(view[:n])
                            dest.write(view[:n])
                            written += n
                        if cancel is not None and cancel.is_set():
                            raise Cancelled()
                        if not n:
                            break
                        if progress is not None:
                            progress(have + written, total)
            except (OSError, ValueError, http.client.HTTPException) as e:
                resp.close(broken=True)
                if cancel is not None and cancel.is_set():
                    raise Cancelled() from None
                raise errdefs.Unavailable(
                    f"error pulling blob {digest} after {have + written} bytes: {e}"
                ) from None
            except BaseException:
                resp.close(broken=True)  # cancelled, or the progress callback gave up
                raise
            if total >= 0 and have + written != total:
                resp.close(broken=True)
                raise errdefs.Unavailable(
                    f"error pulling blob {digest}: unexpected EOF after "
                    f"{have + written} of {total} bytes"
                )
            resp.close()
        else:
            raise _error(resp)
        if f"{digest.split(':', 1)[0]}:{h.hexdigest()}" != digest:
            try:
                dest.seek(0)
                dest.truncate()
            except OSError:
                pass
            raise DigestMismatch(f"filesystem layer verification failed for digest {digest}")
        return written

    def push_blob(self, digest: str, size: int, src: BinaryIO, *, mount_from: str = "") -> str:
        """Make the repository have the blob: ``"exists"`` (HEAD found it), ``"mounted"``
        (cross-repository mount from *mount_from*, a repository path on the same
        registry) or ``"uploaded"`` (POST then one PUT of *size* bytes from *src*)."""
        _check_digest(digest)
        if self.head_blob(digest) is not None:
            return "exists"
        location = ""
        if mount_from:
            mounted, location = self.mount_blob(digest, mount_from)
            if mounted:
                return "mounted"
        self.upload_blob(digest, size, src, location=location)
        return "uploaded"

    def mount_blob(self, digest: str, mount_from: str) -> tuple[bool, str]:
        """Ask the registry to mount *digest* from the repository *mount_from* (a path on
        this registry): (True, "") when it did; else (False, the upload it started or "")."""
        _check_digest(digest)
        if mount_from == self.name:
            return False, ""
        q = urlencode({"mount": digest, "from": mount_from})
        try:
            resp = self.request(
                "POST",
                f"/v2/{self.name}/blobs/uploads/?{q}",
                headers={"Content-Length": "0"},
                body=b"",
                scopes=(*self.scopes, f"repository:{mount_from}:pull"),
            )
        except (errdefs.Unauthorized, errdefs.Forbidden):
            return False, ""  # not allowed to read the source: upload instead, as dockerd
        resp.read(1 << 16)
        if resp.status == 201:
            return True, ""
        if resp.status == 202:
            return False, resp.header("Location")
        return False, ""

    def upload_blob(self, digest: str, size: int, src: BinaryIO, *, location: str = "") -> None:
        """Upload *size* bytes of *src* as blob *digest*: POST (unless an upload was already
        started at *location*) then one PUT; the registry checks the digest."""
        _check_digest(digest)
        if not location:
            resp = self.request(
                "POST", f"/v2/{self.name}/blobs/uploads/", headers={"Content-Length": "0"}, body=b""
            )
            if resp.status != 202:
                raise _error(resp)
            resp.read(1 << 16)
            location = resp.header("Location")
            if not location:
                raise errdefs.Unavailable("registry started an upload without a Location")
        url = urljoin(self._url(f"/v2/{self.name}/blobs/uploads/"), location)
        url += ("&" if "?" in url else "?") + "digest=" + quote(digest, safe=":")
        resp = self.request(
            "PUT",
            url,
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
            body=src,
        )
        if resp.status not in (201, 204):
            raise _error(resp)
        resp.read(1 << 16)


def _check_digest(digest: str) -> None:
    if not valid_digest(digest):
        raise errdefs.InvalidParameter(f"invalid digest {digest!r}")


def _json(body: bytes, what: str) -> dict[str, object]:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise errdefs.InvalidParameter(f"invalid {what} from registry: {e}") from None
    if not isinstance(doc, dict):
        raise errdefs.InvalidParameter(f"invalid {what} from registry")
    return doc


def _next_link(link: str, base: str) -> str:
    """The ``rel="next"`` target of a Link header, resolved against *base*."""
    for part in link.split(","):
        target, _, params = part.partition(";")
        target = target.strip()
        is_next = 'rel="next"' in params.replace(" ", "")
        if is_next and target.startswith("<") and target.endswith(">"):
            return urljoin(base, target[1:-1])
    return ""
