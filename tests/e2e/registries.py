"""Real registries on 127.0.0.1 for the distribution tests, and images to put in them.

Debian's ``docker-registry`` (distribution 2.8) is started on a free port with a temp storage
root, in one of three flavours: no auth, htpasswd Basic auth (bcrypt, made by ``htpasswd -B``)
and Bearer token auth behind :class:`TokenServer`, a token server written here (http.server on
127.0.0.1, JWTs signed RS256 with a key made for the run, the cert of that key being the
registry's ``rootcertbundle``). Images go in with ``skopeo copy`` from an OCI layout built from
Debian's busybox-static (:func:`build_oci_layout`), so a pull test never depends on berth's push.

Fixtures (import them into the test module; pytest takes fixtures from a module's namespace)::

    from tests.e2e.registries import oci_image, registry, htpasswd_registry, token_registry

    def test_pull(berthd, registry, oci_image):
        registry.push(oci_image, "busybox:latest")            # amd64 + arm64 index
        berthd.docker("pull", f"{registry.host}/busybox:latest")

``registry``, ``htpasswd_registry`` and ``token_registry`` are per test (empty storage, nothing
shared); ``oci_image`` is built once per module that imports it. :func:`running_registry` is
the context manager behind them, for tests or benches that want several registries or other
settings. Every registry is stopped and its files removed when its test ends; no process stays.
A missing binary skips the test that asked for it, with the package to install.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import io
import json
import os
import secrets
import shutil
import socket
import subprocess
import tarfile
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

import pytest

from berth.testing import busybox_rootfs_tar

REGISTRY_BIN = "/usr/bin/docker-registry"
SKOPEO = "/usr/bin/skopeo"
HTPASSWD = "/usr/bin/htpasswd"
OPENSSL = "/usr/bin/openssl"

USERNAME = "berth-tester"
PASSWORD = "correct horse battery staple"
SERVICE = "berth-test-registry"
ISSUER = "berth-test-token-server"

Auth = Literal["none", "htpasswd", "token"]

MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MT_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MT_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
ACCEPT_ALL = ", ".join((MT_OCI_INDEX, MT_OCI_MANIFEST, MT_DOCKER_LIST, MT_DOCKER_MANIFEST))


def missing_tools(*, token: bool = False) -> str | None:
    """Why the registry tests cannot run here, or None. Only missing binaries count."""
    needs = {
        REGISTRY_BIN: "docker-registry",
        SKOPEO: "skopeo",
        HTPASSWD: "apache2-utils",
    }
    if token:
        needs[OPENSSL] = "openssl"
    for path, package in needs.items():
        if not os.access(path, os.X_OK):
            return f"{path} is missing (Debian's {package}; run scripts/install-system.sh)"
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _yaml(value: Any, indent: int = 0) -> str:
    """Block YAML for nested dicts of scalars; strings quoted as JSON (valid YAML)."""
    pad = " " * indent
    out = []
    for key, v in value.items():
        if isinstance(v, dict):
            out.append(f"{pad}{key}:\n{_yaml(v, indent + 2)}")
        else:
            out.append(f"{pad}{key}: {json.dumps(v)}\n")
    return "".join(out)


# --- the signing key: RSA through the openssl CLI, RS256 signatures in Python ---------------


def _der_read(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of content, end of content) of the DER element at *pos*."""
    tag = data[pos]
    length = data[pos + 1]
    pos += 2
    if length & 0x80:
        n = length & 0x7F
        length = int.from_bytes(data[pos : pos + n], "big")
        pos += n
    return tag, pos, pos + length


def _rsa_private_numbers(der: bytes) -> tuple[int, int]:
    """(n, d) from a PKCS#1 RSAPrivateKey in DER."""
    tag, pos, _end = _der_read(der, 0)
    assert tag == 0x30, "not a DER sequence"
    ints = []
    for _ in range(4):  # version, modulus, publicExponent, privateExponent
        tag, start, end = _der_read(der, pos)
        assert tag == 0x02, "not a DER integer"
        ints.append(int.from_bytes(der[start:end], "big"))
        pos = end
    return ints[1], ints[3]


_SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")


def libtrust_key_id(spki_der: bytes) -> str:
    """The key ID distribution 2.x (libtrust) gives a public key: base32 of the first 240 bits
    of the SHA-256 of its DER SubjectPublicKeyInfo, in 4-character groups."""
    b32 = base64.b32encode(hashlib.sha256(spki_der).digest()[:30]).decode().rstrip("=")
    return ":".join(b32[i : i + 4] for i in range(0, 48, 4))


@dataclass
class SigningKey:
    """An RSA key and a self-signed X.509 certificate of it, made with the openssl CLI."""

    key_pem: Path
    cert_pem: Path
    n: int
    d: int
    cert_der: bytes
    kid: str

    @classmethod
    def create(cls, directory: Path) -> SigningKey:
        key_pem, cert_pem = directory / "token.key", directory / "token.crt"

        def openssl(*args: str) -> bytes:
            return subprocess.run(
                [OPENSSL, *args], check=True, capture_output=True, stdin=subprocess.DEVNULL
            ).stdout

        openssl(
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "2",
            "-subj", f"/CN={ISSUER}", "-keyout", str(key_pem), "-out", str(cert_pem),
        )  # fmt: skip
        pkcs1 = openssl("rsa", "-in", str(key_pem), "-traditional", "-outform", "DER")
        spki = openssl("pkey", "-in", str(key_pem), "-pubout", "-outform", "DER")
        cert_der = openssl("x509", "-in", str(cert_pem), "-outform", "DER")
        n, d = _rsa_private_numbers(pkcs1)
        return cls(key_pem, cert_pem, n, d, cert_der, libtrust_key_id(spki))

    def sign_rs256(self, data: bytes) -> bytes:
        """RSASSA-PKCS1-v1_5 with SHA-256, as JWS RS256 wants."""
        k = (self.n.bit_length() + 7) // 8
        t = _SHA256_DIGEST_INFO + hashlib.sha256(data).digest()
        em = b"\x00\x01" + b"\xff" * (k - len(t) - 3) + b"\x00" + t
        return pow(int.from_bytes(em, "big"), self.d, self.n).to_bytes(k, "big")

    def jwt(self, claims: dict[str, Any], *, x5c: bool = True) -> str:
        header: dict[str, Any] = {"typ": "JWT", "alg": "RS256", "kid": self.kid}
        if x5c:
            header["x5c"] = [base64.b64encode(self.cert_der).decode()]
        signing_input = (
            _b64url(json.dumps(header, separators=(",", ":")).encode())
            + "."
            + _b64url(json.dumps(claims, separators=(",", ":")).encode())
        )
        return signing_input + "." + _b64url(self.sign_rs256(signing_input.encode()))


# --- the token server -----------------------------------------------------------------------


@dataclass(frozen=True)
class TokenRequest:
    """One request the token server answered (or refused), for tests to look at."""

    method: str
    user: str | None  # None: anonymous; the name tried when refused
    scopes: tuple[str, ...]
    service: str | None
    status: int
    granted: tuple[dict[str, Any], ...] = ()


Policy = Callable[[str | None, str, str, list[str]], list[str]]


def grant_all(user: str | None, type_: str, name: str, actions: list[str]) -> list[str]:
    """The default policy: a logged-in user gets what it asks for; anonymous gets nothing."""
    return list(actions) if user is not None else []


def pull_for_anonymous(user: str | None, type_: str, name: str, actions: list[str]) -> list[str]:
    """A public registry's policy: anonymous users may pull, logged-in users get all."""
    if user is None:
        return [a for a in actions if a == "pull"]
    return list(actions)


class TokenServer:
    """A Docker registry token server (the Bearer challenge flow) on 127.0.0.1.

    ``GET /token?service=..&scope=..`` with Basic credentials (Docker's and skopeo's way) and
    ``POST /token`` with an OAuth2 form (``grant_type=password`` or ``refresh_token``, what the
    docker CLI does with an identity token). Wrong credentials get 401; missing credentials get
    401 too unless *anonymous* is set, in which case they get a token with what *policy* gives
    an anonymous user (nothing by default). ``offline_token=true`` (GET) or ``access_type=
    offline`` (POST) adds a ``refresh_token``. Every request is kept in :attr:`requests`.
    """

    def __init__(
        self,
        directory: Path,
        *,
        username: str = USERNAME,
        password: str = PASSWORD,
        service: str = SERVICE,
        issuer: str = ISSUER,
        anonymous: bool = False,
        policy: Policy = grant_all,
        expires_in: int = 300,
    ) -> None:
        self.key = SigningKey.create(directory)
        self.username, self.password = username, password
        self.service, self.issuer = service, issuer
        self.anonymous = anonymous
        self.policy = policy
        self.expires_in = expires_in
        self.requests: list[TokenRequest] = []
        self.refresh_tokens: dict[str, str] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"token-server-{self.port}", daemon=True
        )
        self._thread.start()

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def issue(self, user: str | None, scopes: list[str]) -> tuple[str, list[dict[str, Any]]]:
        """A signed token for *user* with what the policy grants of *scopes*."""
        access: list[dict[str, Any]] = []
        for scope in scopes:
            parsed = parse_scope(scope)
            if parsed is None:
                continue
            type_, name, actions = parsed
            granted = self.policy(user, type_, name, actions)
            if granted:
                access.append({"type": type_, "name": name, "actions": granted})
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": user or "",
            "aud": self.service,
            "exp": now + self.expires_in,
            "nbf": now - 1,
            "iat": now,
            "jti": secrets.token_hex(16),
            "access": access,
        }
        return self.key.jwt(claims), access

    def _record(self, entry: TokenRequest) -> None:
        with self._lock:
            self.requests.append(entry)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _send(self, status: int, body: dict[str, Any], basic: bool = False) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if basic:
                    self.send_header("WWW-Authenticate", 'Basic realm="berth-test-token"')
                self.end_headers()
                self.wfile.write(data)

            def _basic(self) -> tuple[str, str] | None:
                header = self.headers.get("Authorization", "")
                if not header.lower().startswith("basic "):
                    return None
                try:
                    user, _, password = base64.b64decode(header[6:]).decode().partition(":")
                except ValueError:
                    return ("", "")
                return user, password

            def _answer(
                self,
                method: str,
                creds: tuple[str, str] | None,
                scopes: list[str],
                service: str | None,
                offline: bool,
                refresh: str | None = None,
            ) -> None:
                user: str | None = None
                if refresh is not None:
                    user = server.refresh_tokens.get(refresh)
                    ok = user is not None
                elif creds is not None:
                    user = creds[0]
                    ok = creds == (server.username, server.password)
                else:
                    ok = server.anonymous
                if not ok:
                    server._record(TokenRequest(method, user, tuple(scopes), service, 401))
                    self._send(401, {"details": "incorrect username or password"}, basic=True)
                    return
                if service is not None and service != server.service:
                    server._record(TokenRequest(method, user, tuple(scopes), service, 400))
                    self._send(400, {"details": f"unknown service {service!r}"})
                    return
                token, access = server.issue(user, scopes)
                body: dict[str, Any] = {
                    "token": token,
                    "access_token": token,
                    "expires_in": server.expires_in,
                    "issued_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                }
                if offline and user is not None:
                    rt = secrets.token_urlsafe(24)
                    server.refresh_tokens[rt] = user
                    body["refresh_token"] = rt
                server._record(
                    TokenRequest(method, user, tuple(scopes), service, 200, tuple(access))
                )
                self._send(200, body)

            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                if url.path != "/token":
                    self._send(404, {"details": "not found"})
                    return
                q = urllib.parse.parse_qs(url.query)
                scopes = [s for v in q.get("scope", []) for s in v.split(" ") if s]
                self._answer(
                    "GET",
                    self._basic(),
                    scopes,
                    q.get("service", [None])[0],
                    q.get("offline_token", [""])[0] == "true",
                )

            def do_POST(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                form = urllib.parse.parse_qs(self.rfile.read(length).decode())
                if url.path != "/token":
                    self._send(404, {"details": "not found"})
                    return
                scopes = [s for v in form.get("scope", []) for s in v.split(" ") if s]
                service = form.get("service", [None])[0]
                offline = form.get("access_type", [""])[0] == "offline"
                grant = form.get("grant_type", [""])[0]
                if grant == "password":
                    creds = (form.get("username", [""])[0], form.get("password", [""])[0])
                    self._answer("POST", creds, scopes, service, offline)
                elif grant == "refresh_token":
                    refresh = form.get("refresh_token", [""])[0]
                    self._answer("POST", None, scopes, service, offline, refresh=refresh)
                else:
                    self._send(400, {"details": f"unsupported grant_type {grant!r}"})

        return Handler


def parse_scope(scope: str) -> tuple[str, str, list[str]] | None:
    """``repository:library/busybox:pull,push`` → (type, name, actions)."""
    type_, _, rest = scope.partition(":")
    name, _, actions = rest.rpartition(":")
    if not type_ or not name:
        return None
    return type_, name, [a for a in actions.split(",") if a]


# --- the registry ---------------------------------------------------------------------------


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def http_request(
    url: str,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    data: bytes | None = None,
    timeout: float = 10,
) -> Response:
    """One plain HTTP request; errors are answers, not exceptions. Redirects are followed."""
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return Response(r.status, {k.lower(): v for k, v in r.headers.items()}, r.read())
    except urllib.error.HTTPError as e:
        return Response(e.code, {k.lower(): v for k, v in e.headers.items()}, e.read())


def basic_header(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="x",service="y",scope="a b"`` → ("bearer", {...})."""
    scheme, _, rest = header.strip().partition(" ")
    params: dict[str, str] = {}
    while rest:
        rest = rest.lstrip(" ,")
        key, _, rest = rest.partition("=")
        if rest.startswith('"'):
            value, _, rest = rest[1:].partition('"')
        else:
            value, _, rest = rest.partition(",")
        if key:
            params[key.strip().lower()] = value
    return scheme.lower(), params


class Registry:
    """A running ``docker-registry`` on 127.0.0.1 (see :func:`running_registry`)."""

    def __init__(self, auth: Auth, directory: Path, *, anonymous_pull: bool = False) -> None:
        self.auth = auth
        self.dir = directory
        self.storage = directory / "storage"
        self.username, self.password = USERNAME, PASSWORD
        self.token_server: TokenServer | None = None
        self.anonymous_pull = anonymous_pull
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.log = directory / "registry.log"

    @property
    def host(self) -> str:
        """``127.0.0.1:<port>``, the registry part of an image reference."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def creds(self) -> str | None:
        """``user:password`` for skopeo, or None when the registry has no auth."""
        return None if self.auth == "none" else f"{self.username}:{self.password}"

    def config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {
            "version": "0.1",
            "log": {"level": "warn", "accesslog": {"disabled": True}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.storage)},
                "delete": {"enabled": True},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": {"addr": self.host, "secret": secrets.token_hex(16)},
        }
        if self.auth == "htpasswd":
            cfg["auth"] = {"htpasswd": {"realm": "berth-test", "path": str(self.dir / "htpasswd")}}
        elif self.auth == "token":
            assert self.token_server is not None
            cfg["auth"] = {
                "token": {
                    "realm": self.token_server.realm,
                    "service": self.token_server.service,
                    "issuer": self.token_server.issuer,
                    "rootcertbundle": str(self.token_server.key.cert_pem),
                }
            }
        return cfg

    def start(self) -> None:
        self.storage.mkdir(parents=True, exist_ok=True)
        if self.auth == "htpasswd":
            line = subprocess.run(
                [HTPASSWD, "-Bbn", self.username, self.password],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.strip()
            (self.dir / "htpasswd").write_text(line + "\n")
        elif self.auth == "token":
            policy = pull_for_anonymous if self.anonymous_pull else grant_all
            self.token_server = TokenServer(self.dir, anonymous=self.anonymous_pull, policy=policy)
        last = ""
        for _attempt in range(5):  # a free port can be taken before the registry binds it
            self.port = free_port()
            config = self.dir / "config.yml"
            config.write_text(_yaml(self.config()))
            with open(self.log, "ab") as log:
                self.proc = subprocess.Popen(
                    [REGISTRY_BIN, "serve", str(config)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    start_new_session=True,
                )
            if self._wait_ready(timeout=15):
                return
            last = self.log.read_text(errors="replace")[-2000:]
            self._stop_process()
        raise RuntimeError(f"docker-registry did not start; its log ends:\n{last}")

    def _wait_ready(self, timeout: float) -> bool:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                r = http_request(self.url + "/v2/", timeout=2)
            except OSError:
                time.sleep(0.02)
                continue
            if r.status in (200, 401):
                return True
            time.sleep(0.02)
        return False

    def _stop_process(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def stop(self) -> None:
        """Stop the registry and the token server; the files stay (see :func:`running_registry`)."""
        self._stop_process()
        if self.token_server is not None:
            self.token_server.close()

    # -- talking to it from the tests, with whatever auth it wants --------------------------

    def token(self, *scopes: str, user: str | None = None, password: str | None = None) -> str:
        """A Bearer token from the token server for *scopes* (this registry's credentials)."""
        assert self.token_server is not None, "only a token registry has a token server"
        query = urllib.parse.urlencode(
            [("service", self.token_server.service)] + [("scope", s) for s in scopes]
        )
        r = http_request(
            f"{self.token_server.realm}?{query}",
            headers={
                "Authorization": basic_header(user or self.username, password or self.password)
            },
        )
        if r.status != 200:
            raise RuntimeError(f"token server said {r.status}: {r.body!r}")
        return str(r.json()["token"])

    def request(
        self,
        method: str,
        path: str,
        headers: dict[str, str] | None = None,
        data: bytes | None = None,
    ) -> Response:
        """A request to the registry, answering its auth challenge with this registry's
        credentials (Basic, or a token for the challenge's scope)."""
        headers = dict(headers or {})
        if self.auth == "htpasswd":
            headers["Authorization"] = basic_header(self.username, self.password)
        r = http_request(self.url + path, method, headers, data)
        if r.status == 401 and self.auth == "token":
            _scheme, params = parse_challenge(r.headers.get("www-authenticate", ""))
            scopes = params.get("scope", "").split()
            headers["Authorization"] = "Bearer " + self.token(*scopes)
            r = http_request(self.url + path, method, headers, data)
        return r

    def manifest(self, repo: str, reference: str, accept: str = ACCEPT_ALL) -> Response:
        return self.request("GET", f"/v2/{repo}/manifests/{reference}", {"Accept": accept})

    def blob(self, repo: str, digest: str) -> Response:
        return self.request("GET", f"/v2/{repo}/blobs/{digest}")

    def tags(self, repo: str) -> list[str]:
        r = self.request("GET", f"/v2/{repo}/tags/list")
        if r.status == 404:
            return []
        return list(r.json().get("tags") or [])

    def push(
        self,
        image: OciImage,
        dest: str,
        *,
        ref: str = "latest",
        all_platforms: bool = True,
        format: str | None = None,
        anonymous: bool = False,
        compress_format: str | None = None,
    ) -> str:
        """Copy the layout's *ref* to ``<this registry>/<dest>`` with skopeo; the pushed
        manifest's digest. ``format="v2s2"`` converts to Docker schema 2 manifests (and a
        manifest list for an index); *anonymous* pushes without credentials;
        ``compress_format="zstd"`` recompresses the layers on the way."""
        return skopeo_copy(
            image.layout, ref, f"{self.host}/{dest}", None if anonymous else self.creds,
            all_platforms=all_platforms, format=format, compress_format=compress_format,
        )  # fmt: skip


@contextlib.contextmanager
def running_registry(auth: Auth = "none", *, anonymous_pull: bool = False) -> Iterator[Registry]:
    """A started registry; stopped, with its storage and keys removed, on the way out.

    *anonymous_pull* (token auth only): requests without credentials get pull tokens.
    """
    reason = missing_tools(token=auth == "token")
    if reason:
        pytest.skip(reason)
    directory = Path(tempfile.mkdtemp(prefix=f"berth-registry-{auth}-"))
    reg = Registry(auth, directory, anonymous_pull=anonymous_pull)
    try:
        reg.start()
        yield reg
    finally:
        reg.stop()
        shutil.rmtree(directory, ignore_errors=True)


def skopeo_copy(
    layout: Path,
    ref: str,
    dest: str,
    creds: str | None = None,
    *,
    all_platforms: bool = True,
    format: str | None = None,
    compress_format: str | None = None,
) -> str:
    """``skopeo copy oci:<layout>:<ref> docker://<dest>`` over plain HTTP; the digest of the
    manifest written."""
    with tempfile.TemporaryDirectory(prefix="berth-skopeo-") as tmp:
        policy = Path(tmp) / "policy.json"
        policy.write_text('{"default": [{"type": "insecureAcceptAnything"}]}')
        digestfile = Path(tmp) / "digest"
        cmd = [
            SKOPEO, "--policy", str(policy), "copy", "--quiet",
            "--dest-tls-verify=false", "--digestfile", str(digestfile),
        ]  # fmt: skip
        if all_platforms:
            cmd.append("--all")
        if format:
            cmd += ["--format", format]
        if compress_format:
            cmd += ["--dest-compress-format", compress_format]
        if creds:
            cmd += ["--dest-creds", creds]
        else:
            cmd.append("--dest-no-creds")
        cmd += [f"oci:{layout}:{ref}", f"docker://{dest}"]
        env = dict(os.environ, TMPDIR=tmp, REGISTRY_AUTH_FILE=str(Path(tmp) / "auth.json"))
        out = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env, timeout=120)
        if out.returncode != 0:
            raise RuntimeError(f"skopeo copy failed ({out.returncode}): {out.stderr.strip()}")
        return digestfile.read_text().strip()


# --- an image to push: an OCI layout from busybox-static ------------------------------------


@dataclass
class Blob:
    digest: str
    size: int
    media_type: str

    def descriptor(self, **extra: Any) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size, **extra}


@dataclass
class PlatformImage:
    """One platform's image in the layout."""

    os: str
    architecture: str
    variant: str | None
    manifest: Blob
    config: Blob
    config_json: dict[str, Any]

    @property
    def platform(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    @property
    def image_id(self) -> str:
        """What ``docker images`` shows for it: its config's digest."""
        return self.config.digest


@dataclass
class OciImage:
    """An OCI image layout: ref ``latest`` is an index of linux/amd64 and linux/arm64/v8 (the
    same two gzip layers, different configs); refs ``amd64`` and ``arm64`` are the manifests
    alone. Layer 1 is busybox-static's rootfs, layer 2 adds :attr:`layer2_path`."""

    layout: Path
    index: Blob
    images: dict[str, PlatformImage]  # by architecture
    layers: list[Blob]
    diff_ids: list[str]
    layer2_path: str = "etc/berth-layer2.txt"
    layer2_content: bytes = b"second layer\n"
    refs: dict[str, str] = field(default_factory=dict)  # ref name → digest

    def blob_path(self, digest: str) -> Path:
        algo, _, hex_ = digest.partition(":")
        return self.layout / "blobs" / algo / hex_

    def blob_bytes(self, digest: str) -> bytes:
        return self.blob_path(digest).read_bytes()


def _layer2_tar(path: str, content: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        parent = tarfile.TarInfo(os.path.dirname(path))
        parent.type, parent.mode, parent.mtime = tarfile.DIRTYPE, 0o755, 0
        tf.addfile(parent)
        info = tarfile.TarInfo(path)
        info.size, info.mode, info.mtime = len(content), 0o644, 0
        tf.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def build_oci_layout(directory: Path) -> OciImage:
    """Write the layout described in :class:`OciImage` into *directory*."""
    blobs = directory / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    (directory / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')

    def put(data: bytes, media_type: str) -> Blob:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return Blob(f"sha256:{digest}", len(data), media_type)

    def canonical(obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()

    with tempfile.TemporaryDirectory(prefix="berth-oci-") as tmp:
        layer1_tar = busybox_rootfs_tar(Path(tmp) / "busybox.tar").read_bytes()
    image = OciImage(directory, Blob("", 0, ""), {}, [], [])
    layer2_tar = _layer2_tar(image.layer2_path, image.layer2_content)
    for tar in (layer1_tar, layer2_tar):
        image.diff_ids.append("sha256:" + hashlib.sha256(tar).hexdigest())
        image.layers.append(put(gzip.compress(tar, compresslevel=6, mtime=0), MT_OCI_LAYER_GZIP))

    created = "2024-01-01T00:00:00Z"
    for arch, variant in (("amd64", None), ("arm64", "v8")):
        config: dict[str, Any] = {
            "created": created,
            "architecture": arch,
            "os": "linux",
            "config": {
                "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                "Cmd": ["sh"],
                "Labels": {"org.berth.test.platform": f"linux/{arch}"},
            },
            "rootfs": {"type": "layers", "diff_ids": list(image.diff_ids)},
            "history": [
                {"created": created, "created_by": "busybox-static rootfs"},
                {"created": created, "created_by": f"ADD {image.layer2_path}"},
            ],
        }
        if variant:
            config["variant"] = variant
        config_blob = put(canonical(config), MT_OCI_CONFIG)
        manifest = {
            "schemaVersion": 2,
            "mediaType": MT_OCI_MANIFEST,
            "config": config_blob.descriptor(),
            "layers": [layer.descriptor() for layer in image.layers],
        }
        image.images[arch] = PlatformImage(
            "linux", arch, variant, put(canonical(manifest), MT_OCI_MANIFEST), config_blob, config
        )

    index = {
        "schemaVersion": 2,
        "mediaType": MT_OCI_INDEX,
        "manifests": [
            img.manifest.descriptor(
                platform={
                    "architecture": img.architecture,
                    "os": img.os,
                    **({"variant": img.variant} if img.variant else {}),
                }
            )
            for img in image.images.values()
        ],
    }
    image.index = put(canonical(index), MT_OCI_INDEX)
    ref_key = "org.opencontainers.image.ref.name"
    top = [image.index.descriptor(annotations={ref_key: "latest"})]
    image.refs["latest"] = image.index.digest
    for arch, img in image.images.items():
        top.append(img.manifest.descriptor(annotations={ref_key: arch}))
        image.refs[arch] = img.manifest.digest
    (directory / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": top}))
    return image


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def oci_image(tmp_path_factory: pytest.TempPathFactory) -> OciImage:
    """The test image as an OCI layout (see :class:`OciImage`), built once per module."""
    return build_oci_layout(tmp_path_factory.mktemp("oci-layout"))


@pytest.fixture
def registry() -> Iterator[Registry]:
    """A registry without auth, on plain HTTP, empty."""
    with running_registry("none") as reg:
        yield reg


@pytest.fixture
def htpasswd_registry() -> Iterator[Registry]:
    """A registry with Basic auth (``reg.username`` / ``reg.password``, bcrypt htpasswd)."""
    with running_registry("htpasswd") as reg:
        yield reg


@pytest.fixture
def token_registry() -> Iterator[Registry]:
    """A registry behind the Bearer token flow; ``reg.token_server`` is the
    :class:`TokenServer` (its ``requests``, ``policy`` and ``anonymous`` can be changed)."""
    with running_registry("token") as reg:
        yield reg
