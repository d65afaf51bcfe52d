"""``berth.distribution.pull`` on its own: a real image service (vfs) and a real registry
client against a small registry served from this process (the Docker registry API's GETs:
``/v2/``, manifests by tag or digest, tag lists, blobs with Range), that can stall a blob
or remember what it was asked.  The daemon, the CLI and docker-registry are the end-to-end
tests' part (tests/e2e/test_pull.py); here each path of the download code is driven alone:
resume from a kept file, a kept file that is wrong, a digest mismatch, a cancel while the
registry sends nothing, the daemon-wide download limit, every tag of a repository.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import tarfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from berth import errdefs
from berth.distribution import pull
from berth.distribution.registry import Cancelled, DigestMismatch, RegistryClient
from berth.events import Events
from berth.graphdriver import new_driver
from berth.image.reference import parse_normalized_named
from berth.image.service import ImageService

MT_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MT_CONFIG = "application/vnd.docker.container.image.v1+json"
MT_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _layer(name: str, size: int) -> bytes:
    """A gzip layer of one file of random bytes: a blob as large as the file."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        info = tarfile.TarInfo(name)
        info.size = size
        tf.addfile(info, io.BytesIO(os.urandom(size)))
    return gzip.compress(buf.getvalue(), compresslevel=1, mtime=0)


@dataclass
class Image:
    tag: str
    manifest: bytes
    config: bytes
    layers: list[bytes]

    @property
    def id(self) -> str:
        return _digest(self.config)

    @property
    def layer_digests(self) -> list[str]:
        return [_digest(b) for b in self.layers]


@dataclass
class Asked:
    path: str
    range: str


@dataclass
class FakeRegistry:
    """Not a stand-in for the registry client's path: a registry, small and in-process."""

    blobs: dict[str, bytes] = field(default_factory=dict)
    manifests: dict[str, bytes] = field(default_factory=dict)  # tag or digest → raw
    asked: list[Asked] = field(default_factory=list)
    stall: dict[str, int] = field(default_factory=dict)  # digest → bytes sent before stalling
    release: threading.Event = field(default_factory=threading.Event)
    stalled: threading.Event = field(default_factory=threading.Event)
    active: int = 0
    most_active: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    delay: float = 0.0  # seconds each blob answer takes

    def add_image(self, tag: str, layers: list[bytes]) -> Image:
        diff_ids = [_digest(gzip.decompress(b)) for b in layers]
        config = json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "config": {"Cmd": ["sh"]},
                "rootfs": {"type": "layers", "diff_ids": diff_ids},
            }
        ).encode()
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": MT_MANIFEST,
                "config": {"mediaType": MT_CONFIG, "size": len(config), "digest": _digest(config)},
                "layers": [
                    {"mediaType": MT_LAYER, "size": len(b), "digest": _digest(b)} for b in layers
                ],
            }
        ).encode()
        for blob in (config, *layers):
            self.blobs[_digest(blob)] = blob
        self.manifests[tag] = self.manifests[_digest(manifest)] = manifest
        return Image(tag, manifest, config, layers)

    def blob_requests(self, digest: str) -> list[str]:
        return [a.range for a in self.asked if a.path.endswith("/blobs/" + digest)]


def _handler(reg: FakeRegistry) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def do_GET(self) -> None:
            reg.asked.append(Asked(self.path, self.headers.get("Range", "")))
            if self.path == "/v2/":
                self._send(200, b"{}")
                return
            m = re.fullmatch(r"/v2/(.+)/(manifests|blobs|tags)/(.+)", self.path)
            if m is None:
                self._send(404, b"{}")
                return
            _, kind, ref = m.groups()
            if kind == "tags":
                tags = sorted(t for t in reg.manifests if ":" not in t)
                self._send(200, json.dumps({"name": m.group(1), "tags": tags}).encode())
            elif kind == "manifests":
                raw = reg.manifests.get(ref)
                if raw is None:
                    body = b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}'
                    self._send(404, body)
                else:
                    self._send(200, raw, {"Content-Type": MT_MANIFEST})
            else:
                self._blob(ref)

        def _blob(self, digest: str) -> None:
            data = reg.blobs.get(digest)
            if data is None:
                self._send(404, b'{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown"}]}')
                return
            start = 0
            rng = self.headers.get("Range", "")
            if rng:
                start = int(rng.removeprefix("bytes=").rstrip("-"))
                if start >= len(data):
                    self._send(416, b"")
                    return
            with reg.lock:
                reg.active += 1
                reg.most_active = max(reg.most_active, reg.active)
            try:
                time.sleep(reg.delay)
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                cut = reg.stall.get(digest)
                if cut is not None:
                    self.wfile.write(body[:cut])
                    reg.stalled.set()
                    reg.release.wait(30)
                    body = body[cut:]
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True
            finally:
                with reg.lock:
                    reg.active -= 1

    return Handler


@pytest.fixture
def registry() -> Iterator[tuple[FakeRegistry, str]]:
    reg = FakeRegistry()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(reg))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield reg, f"127.0.0.1:{server.server_address[1]}"
    finally:
        reg.release.set()
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture
def images(tmp_path: Path) -> Iterator[ImageService]:
    driver = new_driver("vfs", tmp_path / "root")
    svc = ImageService(
        tmp_path / "root", driver, events=Events(), image_users=dict, tmp_dir=tmp_path
    )
    yield svc
    driver.cleanup()


@pytest.fixture
def client() -> Iterator[RegistryClient]:
    c = RegistryClient(timeout=30)
    yield c
    c.close()


def _pull(
    images: ImageService,
    client: RegistryClient,
    ref: str,
    cancel: threading.Event | None = None,
) -> tuple[list[str], list[dict[str, Any]]]:
    messages: list[dict[str, Any]] = []
    plan = pull.prepare(client, pull.normalize_reference(ref), None, None)
    ids = pull.execute(images, plan, messages.append, cancel)
    return ids, messages


def _kept(images: ImageService) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in images.downloads_dir.iterdir()}


def _file(images: ImageService, digest: str) -> Path:
    return images.downloads_dir / digest.replace(":", "-")


def _statuses(messages: list[dict[str, Any]], digest: str) -> list[str]:
    return [m["status"] for m in messages if m.get("id") == digest[7:19]]


def test_normalize_reference() -> None:
    assert str(pull.normalize_reference("busybox")) == "docker.io/library/busybox"  # every tag
    assert str(pull.normalize_reference("busybox", "1.36")) == "docker.io/library/busybox:1.36"
    assert str(pull.normalize_reference("busybox:1.36")) == "docker.io/library/busybox:1.36"
    digest = "sha256:" + "a" * 64
    ref = pull.normalize_reference("localhost:5000/x", digest)
    assert (ref.tag, ref.digest) == ("", digest)


def test_pull_downloads_registers_and_forgets_the_files(
    registry: tuple[FakeRegistry, str], images: ImageService, client: RegistryClient
) -> None:
    reg, host = registry
    img = reg.add_image("v1", [_layer("a", 600_000), _layer("b", 1000)])
    ids, messages = _pull(images, client, f"{host}/app:v1")
    assert ids == [img.id]
    assert messages[0] == {"status": "Pulling from app", "id": "v1"}
    for digest in img.layer_digests:
        assert _statuses(messages, digest)[0] == "Pulling fs layer"
        assert _statuses(messages, digest)[-1] == "Pull complete"
    assert messages[-1] == {"status": f"Status: Downloaded newer image for {host}/app:v1"}
    assert _kept(images) == {}
    assert images.references.get(parse_normalized_named(f"{host}/app:v1")) == img.id
    # Again: the image is here, so only the manifest is read.
    before = len(reg.asked)
    _, again = _pull(images, client, f"{host}/app:v1")
    assert [m["status"] for m in again] == [
        "Pulling from app",
        f"Digest: {_digest(img.manifest)}",
        f"Status: Image is up to date for {host}/app:v1",
    ]
    assert not [a for a in reg.asked[before:] if "/blobs/" in a.path]


def test_kept_downloads_are_resumed(
    registry: tuple[FakeRegistry, str], images: ImageService, client: RegistryClient
) -> None:
    """A partial file is continued with Range; a complete one is hashed, not fetched."""
    reg, host = registry
    img = reg.add_image("v1", [_layer("a", 300_000), _layer("b", 300_000)])
    first, second = img.layers
    _file(images, _digest(first)).write_bytes(first[:100_000])
    _file(images, _digest(second)).write_bytes(second)
    _, messages = _pull(images, client, f"{host}/app:v1")
    assert reg.blob_requests(_digest(first)) == ["bytes=100000-"]
    assert reg.blob_requests(_digest(second)) == []
    assert "Downloading" not in _statuses(messages, _digest(second))
    steps = [
        m for m in messages if m["status"] == "Downloading" and m["id"] == _digest(first)[7:19]
    ]
    assert steps[-1]["progressDetail"] == {"current": len(first), "total": len(first)}
    assert _kept(images) == {}


def test_a_wrong_kept_file_is_fetched_again(
    registry: tuple[FakeRegistry, str], images: ImageService, client: RegistryClient
) -> None:
    """A kept part whose bytes are not the blob's: once more from the start, as dockerd
    retries a resumed download that fails verification; a whole wrong file likewise."""
    reg, host = registry
    img = reg.add_image("v1", [_layer("a", 300_000), _layer("b", 300_000)])
    first, second = img.layers
    _file(images, _digest(first)).write_bytes(b"x" * 100_000)
    _file(images, _digest(second)).write_bytes(b"y" * len(second))
    ids, _ = _pull(images, client, f"{host}/app:v1")
    assert ids == [img.id]
    assert reg.blob_requests(_digest(first)) == ["bytes=100000-", ""]
    assert reg.blob_requests(_digest(second)) == [""]


def test_digest_mismatch_keeps_nothing(
    registry: tuple[FakeRegistry, str], images: ImageService, client: RegistryClient
) -> None:
    reg, host = registry
    img = reg.add_image("v1", [_layer("a", 1000)])
    reg.blobs[img.layer_digests[0]] = b"not the layer"
    with pytest.raises(DigestMismatch):
        _pull(images, client, f"{host}/app:v1")
    assert _kept(images) == {}
    assert images.layers.layers() == []
    assert images.images.get(img.id) is None


def test_config_mismatch_in_dockerds_words(
    registry: tuple[FakeRegistry, str], images: ImageService, client: RegistryClient
) -> None:
    reg, host = registry
    img = reg.add_image("v1", [_layer("a", 1000)])
    reg.blobs[img.id] = img.config.replace(b"amd64", b"AMD64")
    with pytest.raises(errdefs.InvalidParameter) as e:
        _pull(images, client, f"{host}/app:v1")
    assert str(e.value) == f"image config verification failed for digest {img.id}"


def test_cancel_cuts_a_stalled_download_and_keeps_what_arrived(
    registry: tuple[FakeRegistry, str], images: ImageService, client: RegistryClient
) -> None:
    """The registry sends nothing more; the cancel still ends the pull at once (the
    connection is shut down), nothing is registered, the first MiB is kept."""
    reg, host = registry
    img = reg.add_image("v1", [_layer("small", 1000), _layer("big", 3 << 20)])
    big = img.layer_digests[1]
    reg.stall[big] = 3 << 19  # 1.5 MiB: one full read of the client's is on disk
    cancel = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            _pull(images, client, f"{host}/app:v1", cancel)
        except BaseException as e:
            failure.append(e)

    worker = threading.Thread(target=run)
    worker.start()
    assert reg.stalled.wait(30)
    # The registry stalls once it has sent 1.5 MiB; the client's first 1 MiB read may
    # still be on its way to the file (a loaded machine): wait for it to be there.
    deadline = time.monotonic() + 30
    while _file(images, big).exists() is False or _file(images, big).stat().st_size < 1 << 20:
        assert time.monotonic() < deadline, "the first MiB never reached the file"
        time.sleep(0.01)
    cancel.set()
    worker.join(10)
    assert not worker.is_alive()  # the registry is still stalling: berth let go
    assert [type(e) for e in failure] == [Cancelled]
    assert images.layers.layers() == []
    kept = _kept(images)
    assert kept[big.replace(":", "-")] >= 1 << 20
    reg.release.set()
    _pull(images, client, f"{host}/app:v1")
    assert reg.blob_requests(big) == ["", f"bytes={kept[big.replace(':', '-')]}-"]


def test_downloads_are_limited_across_pulls(
    registry: tuple[FakeRegistry, str], images: ImageService, client: RegistryClient
) -> None:
    """``max_concurrent_downloads`` holds for the daemon, as dockerd's transfer manager:
    two pulls at once with a limit of 2 never have more than two blobs in flight."""
    reg, host = registry
    reg.delay = 0.2
    client.max_concurrent_downloads = 2
    reg.add_image("one", [_layer(f"o{i}", 1000) for i in range(3)])
    reg.add_image("two", [_layer(f"t{i}", 1000) for i in range(3)])
    results: list[Any] = []

    def run(tag: str) -> None:
        results.append(_pull(images, client, f"{host}/app:{tag}"))

    threads = [threading.Thread(target=run, args=(t,)) for t in ("one", "two")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 2
    assert reg.most_active == 2
    for _, messages in results:
        statuses = [m["status"] for m in messages]
        assert "Waiting" in statuses


def test_every_tag_when_none_is_named(
    registry: tuple[FakeRegistry, str], images: ImageService, client: RegistryClient
) -> None:
    reg, host = registry
    a = reg.add_image("a", [_layer("a", 1000)])
    b = reg.add_image("b", [_layer("b", 1000)])
    ids, messages = _pull(images, client, f"{host}/app")
    assert ids == [a.id, b.id]
    assert [m["id"] for m in messages if m["status"] == "Pulling from app"] == ["a", "b"]
    assert messages[-1] == {"status": f"Status: Downloaded newer image for {host}/app"}
    for img in (a, b):
        ref = parse_normalized_named(f"{host}/app:{img.tag}")
        assert images.references.get(ref) == img.id
        digest_ref = parse_normalized_named(f"{host}/app@{_digest(img.manifest)}")
        assert images.references.get(digest_ref) == img.id


def test_stale_downloads_are_swept_at_start(tmp_path: Path) -> None:
    """Kept downloads untouched for a day go when the image service starts."""
    root = tmp_path / "root"
    driver = new_driver("vfs", root)
    svc = ImageService(root, driver, events=Events(), image_users=dict, tmp_dir=tmp_path)
    old, new = svc.downloads_dir / "sha256-old", svc.downloads_dir / "sha256-new"
    old.write_bytes(b"old")
    new.write_bytes(b"new")
    past = time.time() - 25 * 3600
    os.utime(old, (past, past))
    again = ImageService(root, driver, events=Events(), image_users=dict, tmp_dir=tmp_path)
    assert sorted(p.name for p in again.downloads_dir.iterdir()) == ["sha256-new"]
    driver.cleanup()
