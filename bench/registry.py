"""Issue 13's distribution figures: pull, re-pull and push through a local docker-registry.

One Debian ``docker-registry`` (distribution 2.8) runs on 127.0.0.1 with its storage under
the bench's temp dir; ``skopeo copy`` puts a 3-layer image of about 100 MB (gzip) into it
from an OCI layout. The layout is generated from a seed and cached under ``bench/cache/``,
so every run pulls the same bytes and only the first one pays for building it. Both
engines pull the same reference from the same registry, alternating, so a figure
compares the engines' own work (manifest, download, verify, decompress, register), not
two networks. Nothing leaves 127.0.0.1, and the registry is stopped when the bench ends.

The push samples are checked against the registry itself: the pushed manifest names the
engine's image (its config digest), and every layer blob is there and, when it is not a
blob the bench put there, hashes to its digest and decompresses to the image's DiffID.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import itertools
import json
import os
import random
import shutil
import socket
import subprocess
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engines import Engine, Failed, Unavailable
from workloads import LABEL, Workload

from berth.testing import BUSYBOX, busybox_applets

REGISTRY_BIN = "/usr/bin/docker-registry"
SKOPEO = "/usr/bin/skopeo"
CACHE = Path(__file__).parent / "cache"

#: the repository the bench's image is pulled from; pushes go to ``bench-push-...``
REPO = "bench-image"
PUSH_PREFIX = "bench-push-"
#: uncompressed MB of each of the two content layers, and the share of it that is random
#: (incompressible, like binaries and compressed assets); the rest is text. With gzip -6
#: the two come to about 50 MB each, busybox's layer to 1 MB: ~100 MB to download.
CONTENT_LAYER_MB = 64
RANDOM_SHARE = 0.6
#: the layout's format; a change makes the cache build a new one
LAYOUT_VERSION = 1
#: fixed mtime of every entry, so that the layers are the same bytes on every build
MTIME = 1_700_000_000

MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
GZIP_LAYERS = {MT_OCI_LAYER_GZIP, "application/vnd.docker.image.rootfs.diff.tar.gzip"}
TAR_LAYERS = {
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.docker.image.rootfs.diff.tar",
}
ACCEPT = ", ".join(
    (
        "application/vnd.docker.distribution.manifest.v2+json",
        MT_OCI_MANIFEST,
    )
)

#: what a container of the image prints for the files of its two content layers: one
#: sha256 over the ``sha256sum`` lines of every file, in byte order of the paths
TREE_SUM = "cd /bench && find . -type f | sort | xargs sha256sum | sha256sum"

# The registry is on 127.0.0.1: never let an http_proxy from the environment see a request.
_http = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _expect(cond: bool, what: str) -> None:
    if not cond:
        raise Failed(what)


def missing_tools() -> str | None:
    for path, package in ((REGISTRY_BIN, "docker-registry"), (SKOPEO, "skopeo")):
        if not os.access(path, os.X_OK):
            return f"{path} is missing (Debian's {package}; scripts/install-system.sh installs it)"
    return None


# --- the registry ----------------------------------------------------------------------------


#: ports the bench's registries had: never given out twice, so that a new "empty" registry
#: is never one whose host (127.0.0.1:port) an engine remembers blobs from (dockerd tries
#: cross-repository mounts from repositories it knows on the same host)
_used_ports: set[int] = set()


def _free_port() -> int:
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _used_ports:
            _used_ports.add(port)
            return port


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


def http(url: str, method: str = "GET", headers: dict[str, str] | None = None) -> Response:
    """A request to one of the bench's registries (no proxy; errors are answers too)."""
    req = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with _http.open(req, timeout=60) as r:
            return Response(r.status, {k.lower(): v for k, v in r.headers.items()}, r.read())
    except urllib.error.HTTPError as err:
        return Response(err.code, {k.lower(): v for k, v in err.headers.items()}, err.read())


class LocalRegistry:
    """A ``docker-registry`` on 127.0.0.1 serving plain HTTP from *directory*, without auth
    (engines treat 127.0.0.0/8 as an insecure registry, so neither needs a flag)."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def start(self) -> None:
        storage = self.dir / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        log_path = self.dir / "registry.log"
        for _attempt in range(5):  # a free port can be taken before the registry binds it
            self.port = _free_port()
            config = {
                "version": "0.1",
                "log": {"level": "warn", "accesslog": {"disabled": True}},
                "storage": {
                    "filesystem": {"rootdirectory": str(storage)},
                    "maintenance": {"uploadpurging": {"enabled": False}},
                },
                "http": {"addr": self.host, "secret": os.urandom(16).hex()},
            }
            path = self.dir / "config.yml"
            path.write_text(json.dumps(config))  # JSON is YAML
            with log_path.open("ab") as log:
                self.proc = subprocess.Popen(
                    [REGISTRY_BIN, "serve", str(path)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    start_new_session=True,
                )
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and self.proc.poll() is None:
                with contextlib.suppress(OSError):
                    if http(self.url + "/v2/").status == 200:
                        return
                time.sleep(0.02)
            self.stop()
        raise RuntimeError(
            "docker-registry did not start; its log ends:\n"
            + log_path.read_text(errors="replace")[-2000:]
        )

    def stop(self) -> None:
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


@contextlib.contextmanager
def running_registry(parent: Path) -> Iterator[LocalRegistry]:
    """A started registry with its storage in a new dir under *parent*; on the way out the
    process is stopped and the dir removed."""
    reg = LocalRegistry(Path(tempfile.mkdtemp(prefix="registry-", dir=parent)))
    try:
        reg.start()
        yield reg
    finally:
        reg.stop()
        shutil.rmtree(reg.dir, ignore_errors=True)


# --- the image -------------------------------------------------------------------------------


@dataclass
class Layer:
    digest: str  # of the gzip blob
    size: int
    diff_id: str  # of the tar


@dataclass
class BenchImage:
    """The generated image as an OCI layout (ref ``latest``: a linux manifest of the host's
    architecture)."""

    layout: Path
    config_digest: str  # the image ID engines show
    layers: list[Layer]
    tree_sum: str  # what TREE_SUM prints in a container of it

    @property
    def compressed(self) -> int:
        return sum(layer.size for layer in self.layers)


def _arch() -> str:
    machine = os.uname().machine
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def _tar_entry(tf: tarfile.TarFile, name: str, data: bytes | None = None, **attrs: Any) -> None:
    info = tarfile.TarInfo(name)
    info.mtime, info.mode, info.uname, info.gname = MTIME, 0o755, "root", "root"
    if data is None and "linkname" not in attrs:
        info.type = tarfile.DIRTYPE
    for key, value in attrs.items():
        setattr(info, key, value)
    if data is not None:
        info.size = len(data)
        if "mode" not in attrs:
            info.mode = 0o644
    tf.addfile(info, io.BytesIO(data) if data is not None else None)


def _busybox_tar() -> bytes:
    """Debian's static busybox with its applet links, every entry with the same fixed
    mtime (``berth.testing.busybox_rootfs_tar`` stamps the current time)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for d in ("bin", "etc", "tmp", "root", "home", "var", "usr", "usr/bin"):
            _tar_entry(tf, d, mode=0o1777 if d == "tmp" else 0o755)
        _tar_entry(tf, "bin/busybox", Path(BUSYBOX).read_bytes(), mode=0o755)
        for applet in busybox_applets():
            _tar_entry(tf, f"bin/{applet}", type=tarfile.SYMTYPE, linkname="busybox", mode=0o777)
        _tar_entry(tf, "etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
        _tar_entry(tf, "etc/group", b"root:x:0:\n")
    return buf.getvalue()


def _content_tar(rng: random.Random, top: str, total: int) -> tuple[bytes, dict[str, str]]:
    """A layer of files under ``bench/<top>``, 256 B to 2 MiB each (log-uniform, so most are
    small and most bytes are in big ones, as in real images): RANDOM_SHARE of the bytes
    random, the rest text of Zipf-distributed words, which gzip shrinks about threefold.
    Returns the tar and each file's sha256 by path (``./<top>/...`` as find prints it)."""
    vocab = [
        "".join(rng.choices("etaoinshrdlcumwfgypbvkjxqz", k=rng.randint(2, 10)))
        for _ in range(4000)
    ]
    weights = list(itertools.accumulate(1 / (i + 1) for i in range(len(vocab))))
    sums: dict[str, str] = {}
    buf = io.BytesIO()
    written = random_bytes = 0
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        _tar_entry(tf, "bench")
        _tar_entry(tf, f"bench/{top}")
        for d in range(16):
            _tar_entry(tf, f"bench/{top}/d{d:02d}")
        n = 0
        while written < total:
            size = min(int(2 ** rng.uniform(8, 21)), total - written)
            if random_bytes < RANDOM_SHARE * (written + size):
                data, ext = rng.randbytes(size), "bin"
                random_bytes += size
            else:
                words = rng.choices(vocab, cum_weights=weights, k=size // 5 + 1)
                lines = (" ".join(words[i : i + 12]) for i in range(0, len(words), 12))
                data, ext = "\n".join(lines).encode()[:size], "txt"
            name = f"bench/{top}/d{n % 16:02d}/f{n:05d}.{ext}"
            _tar_entry(tf, name, data, mode=0o755 if n % 7 == 0 else 0o644)
            sums[f"./{name.removeprefix('bench/')}"] = hashlib.sha256(data).hexdigest()
            written += size
            n += 1
    return buf.getvalue(), sums


def _build(layout: Path, seed: int) -> None:
    """Write the OCI layout into *layout* (a new dir); index.json last, as the mark of a
    finished build."""
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes) -> tuple[str, int]:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return f"sha256:{digest}", len(data)

    rng = random.Random(seed)
    tars = [_busybox_tar()]
    sums: dict[str, str] = {}
    for top in ("l2", "l3"):
        tar, files = _content_tar(rng, top, CONTENT_LAYER_MB << 20)
        tars.append(tar)
        sums.update(files)
    layers = []
    for tar in tars:
        digest, size = put(gzip.compress(tar, compresslevel=6, mtime=0))
        layers.append(Layer(digest, size, "sha256:" + hashlib.sha256(tar).hexdigest()))
    lines = "".join(f"{sums[p]}  {p}\n" for p in sorted(sums))
    created = "2026-01-01T00:00:00Z"
    config = {
        "created": created,
        "architecture": _arch(),
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["sh"],
            "Labels": {"org.berth.bench": "pull"},
        },
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        "history": [
            {"created": created, "created_by": "busybox-static rootfs"},
            {"created": created, "created_by": f"ADD bench/l2 (seed {seed})"},
            {"created": created, "created_by": f"ADD bench/l3 (seed {seed})"},
        ],
    }
    config_digest, config_size = put(json.dumps(config, sort_keys=True).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": MT_OCI_MANIFEST,
        "config": {"mediaType": MT_OCI_CONFIG, "digest": config_digest, "size": config_size},
        "layers": [
            {"mediaType": MT_OCI_LAYER_GZIP, "digest": layer.digest, "size": layer.size}
            for layer in layers
        ],
    }
    manifest_digest, manifest_size = put(json.dumps(manifest).encode())
    meta = {
        "config": config_digest,
        "layers": [vars(layer) for layer in layers],
        "tree_sum": hashlib.sha256(lines.encode()).hexdigest(),
    }
    (layout / "bench.json").write_text(json.dumps(meta, indent=1))
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    ref = {
        "mediaType": MT_OCI_MANIFEST,
        "digest": manifest_digest,
        "size": manifest_size,
        "annotations": {"org.opencontainers.image.ref.name": "latest"},
    }
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [ref]}))


def _load(layout: Path) -> BenchImage | None:
    """The cached image if it is complete and every blob still has its digest."""
    try:
        meta = json.loads((layout / "bench.json").read_text())
        if not (layout / "index.json").exists():
            return None
        image = BenchImage(
            layout, meta["config"], [Layer(**layer) for layer in meta["layers"]], meta["tree_sum"]
        )
        for digest in [image.config_digest, *(layer.digest for layer in image.layers)]:
            h = hashlib.sha256()
            with (layout / "blobs" / "sha256" / digest.removeprefix("sha256:")).open("rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
            if f"sha256:{h.hexdigest()}" != digest:
                return None
        return image
    except (OSError, ValueError, KeyError, TypeError):
        return None


def bench_image(cache: Path, seed: int) -> BenchImage:
    """The image for *seed*, from the cache or built into it (about 10 s, once)."""
    name = f"image-v{LAYOUT_VERSION}-{_arch()}-seed{seed}-{CONTENT_LAYER_MB}mb"
    layout = cache / name
    image = _load(layout)
    if image is not None:
        return image
    cache.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(layout, ignore_errors=True)
    building = Path(tempfile.mkdtemp(prefix=f"{name}.", dir=cache))
    try:
        _build(building / "layout", seed)
        (building / "layout").rename(layout)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    image = _load(layout)
    if image is None:
        raise RuntimeError(f"the image just built in {layout} does not check out")
    return image


def skopeo_copy(layout: Path, dest: str) -> str:
    """``skopeo copy`` of the layout's ``latest`` to ``docker://<dest>`` as a Docker schema 2
    manifest (what most registries serve; the blobs are unchanged); the manifest's digest."""
    with tempfile.TemporaryDirectory(prefix="skopeo-") as tmp:
        policy = Path(tmp) / "policy.json"
        policy.write_text('{"default": [{"type": "insecureAcceptAnything"}]}')
        digestfile = Path(tmp) / "digest"
        cmd = [
            SKOPEO, "--policy", str(policy), "copy", "--quiet", "--dest-tls-verify=false",
            "--dest-no-creds", "--format", "v2s2", "--digestfile", str(digestfile),
            f"oci:{layout}:latest", f"docker://{dest}",
        ]  # fmt: skip
        env = dict(os.environ, TMPDIR=tmp, REGISTRY_AUTH_FILE=str(Path(tmp) / "auth.json"))
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"skopeo copy failed ({out.returncode}): {out.stderr.strip()}")
        return digestfile.read_text().strip()


# --- checks against the registry -------------------------------------------------------------


class _Gunzip:
    """Inflates concatenated gzip members, as ``gzip -d`` does (a member ends, the next
    begins in the same chunk)."""

    def __init__(self) -> None:
        self._d = zlib.decompressobj(31)
        self._inside = False  # bytes of an unfinished member were fed

    def feed(self, chunk: bytes) -> bytes:
        out = []
        while chunk:
            self._inside = True
            out.append(self._d.decompress(chunk))
            if not self._d.eof:
                break
            chunk = self._d.unused_data
            self._d, self._inside = zlib.decompressobj(31), False
        return b"".join(out)

    @property
    def complete(self) -> bool:
        return not self._inside


def _blob_matches(url: str, desc: dict[str, Any], diff_id: str) -> None:
    """Stream the blob at *url*: its bytes must hash to the descriptor's digest and size
    and (decompressed when gzip) to *diff_id*."""
    media_type = desc.get("mediaType", "")
    _expect(media_type in GZIP_LAYERS | TAR_LAYERS, f"layer media type {media_type!r}")
    packed, unpacked = hashlib.sha256(), hashlib.sha256()
    size = 0
    gunzip = _Gunzip() if media_type in GZIP_LAYERS else None
    try:
        with _http.open(urllib.request.Request(url), timeout=60) as r:
            while chunk := r.read(1 << 20):
                packed.update(chunk)
                size += len(chunk)
                unpacked.update(gunzip.feed(chunk) if gunzip else chunk)
    except (urllib.error.URLError, zlib.error) as err:
        raise Failed(f"blob {desc['digest']}: {err}") from err
    name = desc["digest"]
    _expect(f"sha256:{packed.hexdigest()}" == name, f"blob {name}: bytes differ from the digest")
    _expect(size == desc["size"], f"blob {name}: {size} bytes, the manifest says {desc['size']}")
    _expect(gunzip is None or gunzip.complete, f"blob {name}: the gzip stream is cut short")
    _expect(
        f"sha256:{unpacked.hexdigest()}" == diff_id, f"blob {name} does not unpack to {diff_id}"
    )


#: what a daemon without ``POST /images/{name}/push`` answers: no route (404), a route of
#: that path for other methods only (405; berth before push), or NotImplemented (501)
_NO_PUSH = ("page not found", "method not allowed", "not implemented", "not supported")


def _unsupported(stderr: str) -> bool:
    """Whether a failed ``docker push`` says the engine has no push at all."""
    return any(words in stderr.lower() for words in _NO_PUSH)


# --- the workloads ---------------------------------------------------------------------------


class RegistryBench:
    """The registry, the image in it, and the workloads that use them.

    Started on first use, so a run whose ``--only`` picks no registry workload neither
    builds the image nor starts a registry; ``close`` stops every registry it started.
    """

    def __init__(self, tmp: Path, cache: Path, seed: int) -> None:
        self.tmp, self.cache, self.seed = tmp, cache, seed
        self._stack = contextlib.ExitStack()
        self._registry: LocalRegistry | None = None
        self._image: BenchImage | None = None
        self._error: str | None = None
        self.digest = ""  # of the manifest in the registry (what RepoDigests record)
        self.hosts: set[str] = set()  # every registry the bench started, for the clean-up
        self._serial = itertools.count(1)

    def __enter__(self) -> RegistryBench:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def ensure(self) -> tuple[LocalRegistry, BenchImage]:
        """The registry with the image in it; Unavailable when the tools are missing."""
        if self._error is not None:
            raise Unavailable(self._error)
        if self._registry is None or self._image is None:
            self._error = missing_tools()
            if self._error is not None:
                raise Unavailable(self._error)
            try:
                image = bench_image(self.cache, self.seed)
                registry = self._stack.enter_context(running_registry(self.tmp))
                self.hosts.add(registry.host)
                self.digest = skopeo_copy(image.layout, f"{registry.host}/{REPO}:latest")
            except (OSError, RuntimeError, subprocess.SubprocessError) as err:
                self._error = f"the registry or its image: {err}"
                raise Failed(self._error) from err
            self._registry, self._image = registry, image
        return self._registry, self._image

    @property
    def ref(self) -> str:
        registry, _ = self.ensure()
        return f"{registry.host}/{REPO}:latest"

    def describe(self) -> str:
        """One line for the results: the image's size and where it came from."""
        if self._image is None:
            return ""
        mb = self._image.compressed / 1e6
        return (
            f"Registry image: {len(self._image.layers)} layers, {mb:.1f} MB gzip "
            f"(seed {self.seed}), Debian docker-registry on 127.0.0.1."
        )

    # -- on an engine ------------------------------------------------------------------------

    def _present(self, e: Engine) -> bool:
        return e.timed("image", "inspect", "-f", "{{.Id}}", self.ref).returncode == 0

    def _check_image(self, e: Engine) -> None:
        """The engine's image is the registry's: its ID is the config digest, and the
        manifest digest is recorded as a RepoDigest."""
        _, image = self.ensure()
        got = json.loads(e.out("image", "inspect", "-f", "{{json .}}", self.ref))
        _expect(
            got["Id"] == image.config_digest, f"image ID {got['Id']}, want {image.config_digest}"
        )
        want = f"{self.ref.rsplit(':', 1)[0]}@{self.digest}"
        _expect(want in (got.get("RepoDigests") or []), f"RepoDigests {got.get('RepoDigests')}")

    def remove_images(self, e: Engine) -> None:
        """Untag every image the bench pulled or tagged for its registries on *e*, so that
        the image and its layers go (a pull must download every layer again)."""
        listed = e.out("images", "--format", "{{.Repository}}:{{.Tag}}").split()
        ours = [
            ref for ref in listed if any(ref.startswith(f"{host}/bench-") for host in self.hosts)
        ]
        if ours:
            e.ok("rmi", *ours)
        if self._image is not None:
            gone = e.timed("image", "inspect", self._image.config_digest).returncode != 0
            _expect(gone, f"the image {self._image.config_digest} is still there after rmi")

    def _pull(self, e: Engine) -> float:
        """A timed ``docker pull`` of the image when it is not there, checked: every layer
        downloaded ("Pull complete" under its short id), the digest, the image."""
        _, image = self.ensure()
        r = e.ok("pull", self.ref)
        out = r.stdout.decode(errors="replace")
        lines = set(out.splitlines())
        _expect(f"Digest: {self.digest}" in lines, f"pull printed no digest line: {out[-300:]!r}")
        _expect(
            f"Status: Downloaded newer image for {self.ref}" in lines,
            f"pull did not download: {out[-300:]!r}",
        )
        for layer in image.layers:
            short = layer.digest.removeprefix("sha256:")[:12]
            _expect(f"{short}: Pull complete" in lines, f"layer {short} not pulled: {out!r}")
        self._check_image(e)
        return r.seconds

    def _repull(self, e: Engine) -> float:
        """A timed ``docker pull`` with the image there: a manifest check, nothing moved."""
        r = e.ok("pull", self.ref)
        out = r.stdout.decode(errors="replace")
        lines = set(out.splitlines())
        _expect(f"Digest: {self.digest}" in lines, f"pull printed no digest line: {out[-300:]!r}")
        _expect(
            f"Status: Image is up to date for {self.ref}" in lines,
            f"pull of a present image said {out[-300:]!r}",
        )
        _expect("Pull complete" not in out, f"pull of a present image pulled layers: {out!r}")
        self._check_image(e)
        return r.seconds

    def _push(self, e: Engine, registry: LocalRegistry) -> float:
        """Tag the image as ``<registry>/bench-push-<engine>-<n>:latest`` (a repository new
        to that registry), time ``docker push`` and check the registry's copy; untag."""
        _, image = self.ensure()
        repo = f"{PUSH_PREFIX}{e.name}-{next(self._serial)}"
        target = f"{registry.host}/{repo}:latest"
        e.ok("tag", self.ref, target)
        try:
            r = e.timed("push", target)
            if r.returncode != 0:
                why = r.stderr.decode(errors="replace").strip()
                if _unsupported(why):
                    raise Unavailable(f"docker push: {why[:200]}")
                raise Failed(f"docker push: exit {r.returncode}: {why[:300]}")
            out = r.stdout.decode(errors="replace")
        finally:
            e.ok("rmi", target)
        got = http(f"{registry.url}/v2/{repo}/manifests/latest", headers={"Accept": ACCEPT})
        _expect(got.status == 200, f"the pushed manifest: HTTP {got.status} {got.body[:200]!r}")
        digest = "sha256:" + hashlib.sha256(got.body).hexdigest()
        _expect(
            f"latest: digest: {digest} size: {len(got.body)}" in out.splitlines(),
            f"push did not print the manifest's digest {digest}: {out[-300:]!r}",
        )
        manifest = json.loads(got.body)
        _expect(
            manifest["config"]["digest"] == image.config_digest,
            f"pushed config {manifest['config']['digest']}, the image is {image.config_digest}",
        )
        config = http(f"{registry.url}/v2/{repo}/blobs/{image.config_digest}")
        _expect(
            config.status == 200
            and "sha256:" + hashlib.sha256(config.body).hexdigest() == image.config_digest,
            f"the pushed config blob: HTTP {config.status}",
        )
        layers = manifest["layers"]
        _expect(len(layers) == len(image.layers), f"{len(layers)} layers pushed")
        for desc, layer in zip(layers, image.layers, strict=True):
            url = f"{registry.url}/v2/{repo}/blobs/{desc['digest']}"
            if desc["digest"] == layer.digest:  # the blob skopeo put in: checked when built
                head = http(url, method="HEAD")
                _expect(
                    head.status == 200 and head.headers.get("content-length") == str(layer.size),
                    f"blob {layer.digest} in {repo}: HTTP {head.status}",
                )
            else:  # compressed by the engine
                _blob_matches(url, desc, layer.diff_id)
        return r.seconds

    def workloads(self) -> list[Workload]:
        def drop(e: Engine) -> None:
            if self._registry is not None:
                self.remove_images(e)

        def pull_setup(e: Engine) -> None:
            """Start from nothing, pull once untimed and check the files themselves."""
            _, image = self.ensure()
            self.remove_images(e)
            self._pull(e)
            got = e.out(
                "run", "--rm", "--network", "none", "-l", LABEL, self.ref, "sh", "-c", TREE_SUM
            )
            _expect(got == f"{image.tree_sum}  -", f"the image's files sum to {got!r}")

        def pull(e: Engine) -> float:
            self.remove_images(e)
            return self._pull(e)

        def have_image(e: Engine) -> None:
            self.ensure()
            if not self._present(e):
                self._pull(e)

        def push_same(e: Engine) -> float:
            registry, _ = self.ensure()
            return self._push(e, registry)

        def push_fresh(e: Engine) -> float:
            with running_registry(self.tmp) as fresh:  # untimed: start, and stop after
                self.hosts.add(fresh.host)
                return self._push(e, fresh)

        size = "3 layers, ~100 MB"
        return [
            Workload(f"pull ({size})", pull, rounds=7, setup=pull_setup),
            Workload("re-pull (all layers present)", self._repull, setup=have_image),
            Workload(
                "push to an empty registry (every layer uploaded)",
                push_fresh,
                rounds=7,
                setup=have_image,
            ),
            Workload(
                "push to a new repository of the same registry (layers there)",
                push_same,
                rounds=7,
                setup=have_image,
                teardown=drop,
            ),
        ]
