"""A registry index that offers the v1 search API, on 127.0.0.1, for the search tests.

Docker Hub's index answers ``GET /v1/search?q=<query>&n=<limit>`` with
``{"num_results", "query", "page_size", "results": [{"name", "description",
"star_count", "is_official", "is_automated"}]}``; Debian's docker-registry (distribution
2.x) has no such API.  :class:`SearchIndex` is that API over a fixed catalogue: a result
is every entry whose name or description holds the query (case-insensitive), at most
``n`` of them, in catalogue order.  It can require Basic credentials (401 with a Basic
challenge otherwise) or Bearer tokens from a :class:`~tests.e2e.registries.TokenServer`
(401 with a Bearer challenge naming the token server; only tokens that server issued
with ``registry:catalog:search`` granted are accepted).  :attr:`SearchIndex.fail_with`
makes it answer every search with one status (404 is a registry without search).  Every
request is recorded.

Fixtures (import them into the test module)::

    from tests.e2e.search_index import search_index

    def test_search(berthd, search_index):
        berthd.docker("search", f"{search_index.host}/bus")
"""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import tempfile
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

import pytest

from tests.e2e.registries import OPENSSL, PASSWORD, USERNAME, TokenServer

Auth = Literal["none", "basic", "token"]

#: the catalogue: distinct star counts, so that the CLI's sort by stars is one order
CATALOGUE: tuple[dict[str, Any], ...] = (
    {
        "name": "busybox",
        "description": "Busybox base image.",
        "star_count": 3300,
        "is_official": True,
        "is_automated": False,
    },
    {
        "name": "berth/busybox-tools",
        "description": (
            "Busybox with the extra applets a test suite wants: a description longer "
            "than the forty-five characters the CLI shows"
        ),
        "star_count": 7,
        "is_official": False,
        "is_automated": True,
    },
    {
        "name": "someone/busy-app",
        "description": "An app that keeps busy.",
        "star_count": 2,
        "is_official": False,
        "is_automated": False,
    },
    {
        "name": "alpine",
        "description": "A minimal Docker image based on Alpine Linux",
        "star_count": 10500,
        "is_official": True,
        "is_automated": False,
    },
    {
        "name": "berth/quiet",
        "description": "Nothing busy here.\nSecond line of the description.",
        "star_count": 0,
        "is_official": False,
        "is_automated": False,
    },
)


@dataclass(frozen=True)
class SearchRequest:
    path: str
    query: dict[str, list[str]]
    authorization: str
    docker_token: str
    status: int


class RecordingTokenServer(TokenServer):
    """The tests' token server, keeping every token it issues with what it granted."""

    def __init__(self, directory: Path) -> None:
        self.issued: dict[str, list[dict[str, Any]]] = {}
        super().__init__(directory)

    def issue(self, user: str | None, scopes: list[str]) -> tuple[str, list[dict[str, Any]]]:
        token, access = super().issue(user, scopes)
        self.issued[token] = access
        return token, access


class SearchIndex:
    """The v1 search API on 127.0.0.1 (see the module's docstring)."""

    def __init__(
        self,
        auth: Auth = "none",
        *,
        catalogue: tuple[dict[str, Any], ...] = CATALOGUE,
        token_server: RecordingTokenServer | None = None,
    ) -> None:
        self.auth = auth
        self.catalogue = catalogue
        self.username, self.password = USERNAME, PASSWORD
        self.token_server = token_server
        #: a status every search is answered with instead (a failing index), body and all
        self.fail_with: int | None = None
        self.requests: list[SearchRequest] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"search-index-{self.port}", daemon=True
        )
        self._thread.start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def searches(self) -> list[SearchRequest]:
        """The requests for ``/v1/search`` that were answered 200."""
        with self._lock:
            return [r for r in self.requests if r.path == "/v1/search" and r.status == 200]

    def find(self, query: str, limit: int) -> list[dict[str, Any]]:
        q = query.lower()
        hits = [
            e for e in self.catalogue if q in e["name"].lower() or q in e["description"].lower()
        ]
        return hits[:limit]

    def _authorized(self, header: str) -> bool:
        if self.auth == "none":
            return True
        scheme, _, value = header.partition(" ")
        if self.auth == "basic":
            if scheme.lower() != "basic":
                return False
            try:
                user, _, password = base64.b64decode(value).decode().partition(":")
            except ValueError:
                return False
            return (user, password) == (self.username, self.password)
        assert self.token_server is not None
        if scheme.lower() != "bearer":
            return False
        access = self.token_server.issued.get(value)
        return access is not None and any(
            a["type"] == "registry" and a["name"] == "catalog" and "search" in a["actions"]
            for a in access
        )

    def _challenge(self) -> str:
        if self.auth == "basic":
            return 'Basic realm="berth-test-search"'
        assert self.token_server is not None
        return (
            f'Bearer realm="{self.token_server.realm}",service="{self.token_server.service}",'
            'scope="registry:catalog:search"'
        )

    def _record(self, entry: SearchRequest) -> None:
        with self._lock:
            self.requests.append(entry)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        index = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                q = urllib.parse.parse_qs(url.query, keep_blank_values=True)
                authorization = self.headers.get("Authorization", "")
                if url.path != "/v1/search":
                    status, body, headers = 404, b"404 page not found\n", {}
                elif index.fail_with is not None:
                    status, body = index.fail_with, f"{index.fail_with} failing index\n".encode()
                    headers = {"Content-Type": "text/plain"}
                elif not index._authorized(authorization):
                    status = 401
                    body = (
                        b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}'
                    )
                    headers = {
                        "Content-Type": "application/json",
                        "WWW-Authenticate": index._challenge(),
                    }
                else:
                    query = q.get("q", [""])[0]
                    try:
                        limit = int(q.get("n", ["25"])[0])
                    except ValueError:
                        limit = 25
                    results = index.find(query, limit)
                    status = 200
                    body = json.dumps(
                        {
                            "num_results": len(results),
                            "query": query,
                            "page_size": limit,
                            "results": results,
                        }
                    ).encode()
                    headers = {"Content-Type": "application/json"}
                index._record(
                    SearchRequest(
                        url.path,
                        q,
                        authorization,
                        self.headers.get("X-Docker-Token", ""),
                        status,
                    )
                )
                self._send(status, body, headers)

        return Handler


@contextlib.contextmanager
def running_search_index(auth: Auth = "none") -> Iterator[SearchIndex]:
    """A started index (with its token server for ``"token"``), closed on the way out."""
    directory: Path | None = None
    token_server: RecordingTokenServer | None = None
    if auth == "token":
        if not shutil.which(OPENSSL):
            pytest.skip(f"{OPENSSL} is missing (Debian's openssl)")
        directory = Path(tempfile.mkdtemp(prefix="berth-search-token-"))
        token_server = RecordingTokenServer(directory)
    index = SearchIndex(auth, token_server=token_server)
    try:
        yield index
    finally:
        index.close()
        if token_server is not None:
            token_server.close()
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def search_index() -> Iterator[SearchIndex]:
    """An index without auth."""
    with running_search_index("none") as index:
        yield index


@pytest.fixture
def basic_search_index() -> Iterator[SearchIndex]:
    """An index that wants ``index.username`` / ``index.password`` as Basic credentials."""
    with running_search_index("basic") as index:
        yield index


@pytest.fixture
def token_search_index() -> Iterator[SearchIndex]:
    """An index behind the Bearer token flow (``index.token_server``)."""
    with running_search_index("token") as index:
        yield index
