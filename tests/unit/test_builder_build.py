"""The builder's own logic without a daemon: the context (unpack, Dockerfile lookup,
.dockerignore), remote contexts from a 127.0.0.1 server, the image cache over a real image
store, and the Go formatting of the ``#(nop)`` comments (checked against what dockerd 20.10
wrote for the same Dockerfiles)."""

from __future__ import annotations

import gzip
import http.server
import io
import json
import os
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from berth import errdefs
from berth.builder.build import BuildOptions, BuildOutput, sanitize_tags
from berth.builder.cache import ImageProber, LocalImageCache, SourcesImageCache, compare
from berth.builder.context import BuildContext, open_context, read_context
from berth.builder.contextfs import ContextFS
from berth.builder.dispatch import (
    _resolve_auth,
    _unneeded_stages,
    go_duration,
    go_list_q,
    go_list_v,
    go_quote_rune,
    health_q,
    normalize_workdir,
    parse_port_specs,
)
from berth.builder.dockerignore import PatternMatcher, read_patterns
from berth.builder.instructions import parse_dockerfile
from berth.builder.prune import cache_filter
from berth.builder.remote import detect_content_type, fetch_remote, is_git_url
from berth.distribution.registry import AuthConfig
from berth.graphdriver import new_driver
from berth.image.store import Image, ImageStore
from berth.layer import LayerStore
from berth.types.container import Config, HealthConfig
from berth.types.filters import Filters
from berth.types.image import ImageConfig
from berth.utils.platform import Platform


def tar_of(files: dict[str, str], *, pad: bool = True) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, text in files.items():
            raw = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            tf.addfile(info, io.BytesIO(raw))
    data = buf.getvalue()
    if not pad:  # as the CLI's -f - context: the last file's data, then nothing
        last = list(files.values())[-1].encode()
        end = data.rindex(last) + len(last)
        data = data[:end]
    return data


# -- the context ----------------------------------------------------------------------------


def _names(fs: ContextFS) -> list[str]:
    """The files of the context (directories left out)."""
    return [rel for rel, e in fs.walk(".") if e.children is None]


def test_read_plain_gzip_and_the_clis_unpadded_tar(tmp_path: Path) -> None:
    for data in (
        tar_of({"Dockerfile": "FROM busybox\n", "a/b": "x"}),
        gzip.compress(tar_of({"Dockerfile": "FROM busybox\n", "a/b": "x"})),
        tar_of({"Dockerfile": "FROM busybox\n", "a/b": "x"}, pad=False),
    ):
        fs = read_context(io.BytesIO(data), tmp_path)
        assert fs.read(fs.lookup("a/b")) == b"x"
        fs.close()


def test_read_refuses_what_is_not_a_tar_and_stays_inside(tmp_path: Path) -> None:
    with pytest.raises(errdefs.InvalidParameter, match="not a valid tar"):
        read_context(io.BytesIO(b"this is not a tar\n" * 50), tmp_path)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        link = tarfile.TarInfo("up")
        link.type = tarfile.SYMTYPE
        link.linkname = "/"
        tf.addfile(link)
        info = tarfile.TarInfo("up/escaped")
        info.size = 1
        tf.addfile(info, io.BytesIO(b"x"))
    fs = read_context(io.BytesIO(buf.getvalue()), tmp_path)
    assert _names(fs) == ["escaped", "up"]  # the link was followed inside the root
    fs.close()
    assert list(tmp_path.iterdir()) == []  # nothing but an unlinked spool was written


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a small tmpfs (needs root)")
def test_a_context_larger_than_the_free_space_is_a_clear_error(tmp_path: Path) -> None:
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)], check=True)
    try:
        data = tar_of({"Dockerfile": "FROM a\n", "big": "x" * (3 << 20)})
        with pytest.raises(errdefs.System) as e:
            read_context(io.BytesIO(data), small)
        assert e.value.message == "writing the build context: No space left on device"
        assert list(small.iterdir()) == []
        assert os.statvfs(small).f_bfree == os.statvfs(small).f_blocks  # all of it freed
    finally:
        subprocess.run(["umount", str(small)], check=True)


def _opened(tmp_path: Path, files: dict[str, str], name: str, **kw: bool) -> BuildContext:
    return open_context(read_context(io.BytesIO(tar_of(files)), tmp_path), name, **kw)


def test_dockerfile_lookup(tmp_path: Path) -> None:
    ctx = _opened(tmp_path, {"dockerfile": "FROM a\n", "sub/Build.df": "FROM b\n"}, "")
    assert (ctx.dockerfile_name, ctx.dockerfile) == ("dockerfile", b"FROM a\n")
    ctx.close()
    ctx = _opened(tmp_path, {"sub/Build.df": "FROM b\n", "empty": ""}, "sub/Build.df")
    assert ctx.dockerfile == b"FROM b\n"
    ctx.close()
    for name, message in (
        ("nosuch", "Cannot locate specified Dockerfile: nosuch"),
        ("empty", "the Dockerfile (empty) cannot be empty"),
        ("sub", "the Dockerfile (sub) is a directory"),
    ):
        with pytest.raises(errdefs.InvalidParameter) as e:
            _opened(tmp_path, {"sub/x": "1", "empty": ""}, name)
        assert e.value.message == message


def test_dockerignore_drops_the_dockerfile_and_itself_when_named(tmp_path: Path) -> None:
    ctx = _opened(
        tmp_path,
        {
            "Dockerfile": "FROM a\n",
            ".dockerignore": ".dockerignore\nDockerfile\nsecret\n",
            "secret": "s",
        },
        "Dockerfile",
    )
    assert ctx.dockerfile == b"FROM a\n"
    assert _names(ctx.fs) == ["secret"]  # the client filters the rest
    ctx.close()


def test_remote_contexts_are_filtered_by_their_dockerignore(tmp_path: Path) -> None:
    ctx = _opened(
        tmp_path,
        {
            "Dockerfile": "FROM a\n",
            ".dockerignore": "# comment\n**/*.log\n/build\n!build/keep\ndocs\n",
            "a.log": "",
            "src/deep/b.log": "",
            "src/main.c": "",
            "build/out": "",
            "build/keep": "",
            "docs/x/y": "",
        },
        "Dockerfile",
        apply_dockerignore=True,
    )
    assert _names(ctx.fs) == [".dockerignore", "Dockerfile", "build/keep", "src/main.c"]
    ctx.close()


def test_dockerignore_patterns() -> None:
    assert read_patterns(b"\xef\xbb\xbf# c\n  /a/../b/  \n!./c\n\n*.md\n") == ["b", "!c", "*.md"]
    m = PatternMatcher(["*.md", "!README.md", "**/tmp", "a?c", "dir"])
    assert m.matches("x.md") and not m.matches("README.md")
    assert m.matches("tmp") and m.matches("x/y/tmp") and m.matches("x/tmp/z")
    assert m.matches("abc") and not m.matches("a/c")
    assert m.matches("dir/sub/file")  # a parent directory matches
    assert not m.matches("sub/x.md")  # * stays in one element
    with pytest.raises(errdefs.InvalidParameter, match="illegal exclusion pattern"):
        PatternMatcher(["!"])
    with pytest.raises(errdefs.InvalidParameter, match="syntax error"):
        PatternMatcher(["[a"])


# -- remote contexts ---------------------------------------------------------------------------


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[dict[str, tuple[str, bytes]], str]]:
    """A 127.0.0.1 server of path → (content type, body); 404 for the rest."""
    routes: dict[str, tuple[str, bytes]] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            found = routes.get(self.path)
            if found is None:
                self.send_error(404, "nothing here")
                return
            ctype, body = found
            self.send_response(200)
            if ctype:
                self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield routes, f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()


def test_fetch_remote(tmp_path: Path, server: tuple[dict[str, tuple[str, bytes]], str]) -> None:
    routes, base = server
    cancel = threading.Event()
    progress: list[dict[str, Any]] = []
    routes["/ctx.tgz"] = ("", gzip.compress(tar_of({"Dockerfile": "FROM a\n", "f": "x"})))
    ctx = fetch_remote(base + "/ctx.tgz", tmp_path, "", progress.append, cancel)
    assert ctx.fs.read(ctx.fs.lookup("f")) == b"x"
    ctx.close()
    assert progress[-1]["id"] == "Downloading context"
    routes["/Dockerfile"] = ("application/octet-stream", b"FROM b\n")
    ctx = fetch_remote(base + "/Dockerfile", tmp_path, "", None, cancel)
    assert (list(ctx.fs.walk(".")), ctx.dockerfile) == ([], b"FROM b\n")
    routes["/page"] = ("text/html", b"<html></html>")
    with pytest.raises(errdefs.InvalidParameter, match='unsupported Content-Type "text/html"'):
        fetch_remote(base + "/page", tmp_path, "", None, cancel)
    with pytest.raises(errdefs.NotFound, match="with status 404"):
        fetch_remote(base + "/nosuch", tmp_path, "", None, cancel)
    with pytest.raises(errdefs.NotImplementedFeature):
        fetch_remote(base + "/repo.git", tmp_path, "", None, cancel)
    with pytest.raises(errdefs.InvalidParameter, match="could not be recognized as URL"):
        fetch_remote("ftp://x/y", tmp_path, "", None, cancel)
    assert list(tmp_path.iterdir()) == []


def test_url_kinds_and_sniffing() -> None:
    assert is_git_url("https://example.invalid/r.git") and is_git_url("git@host:r")
    assert is_git_url("github.com/moby/moby") and not is_git_url("https://example.invalid/c.tar")
    assert detect_content_type(b"FROM busybox\n") == "text/plain"
    assert detect_content_type(tar_of({"a": "b"})[:100]) == "application/octet-stream"
    assert detect_content_type(gzip.compress(b"x")) == "application/x-gzip"


# -- options ----------------------------------------------------------------------------------


def test_tags_are_sanitized_as_moby_does() -> None:
    refs = sanitize_tags(["a", "", "a:latest", "docker.io/library/a", "b:1"])
    assert [r.familiar() for r in refs] == ["a:latest", "b:1"]
    with pytest.raises(errdefs.InvalidParameter, match="build tag cannot contain a digest"):
        sanitize_tags(["a@sha256:" + "0" * 64])
    with pytest.raises(errdefs.InvalidParameter):
        sanitize_tags(["Bad:Tag"])


def test_output_messages() -> None:
    out: list[dict[str, Any]] = []
    o = BuildOutput(out.append, want_aux=False)
    o.stdout("x")
    o.stderr("e\n")
    o.stdout("")
    o.aux("sha256:1")
    assert out == [{"stream": "x"}, {"stream": "\x1b[91me\n\x1b[0m"}]
    hc = BuildOptions(memory=5, extra_hosts=["h:1.2.3.4"], network_mode="none").host_config()
    assert (hc.memory, hc.extra_hosts, hc.network_mode) == (5, ["h:1.2.3.4"], "none")


# -- Go's formatting in the #(nop) comments ------------------------------------------------------


def test_go_formatting_of_comments() -> None:
    assert go_list_q(["/bin/sh", "-c", 'echo "x"']) == '["/bin/sh" "-c" "echo \\"x\\""]'
    assert go_list_q(None) == "[]"
    assert go_list_v(["/bin/sh", "-ec"]) == "[/bin/sh -ec]"
    assert [go_duration(n) for n in (0, 3_000_000_000, 300_000_000_000, 1_500_000, 90)] == [
        "0s", "3s", "5m0s", "1.5ms", "90ns",
    ]  # fmt: skip
    assert go_duration(3_723_500_000_000) == "1h2m3.5s"
    assert [go_quote_rune(n) for n in (0, 3, 10, 65, 39)] == [
        "'\\x00'",
        "'\\x03'",
        "'\\n'",
        "'A'",
        "'\\''",
    ]
    # dockerd 20.10's history of HEALTHCHECK --interval=5m --timeout=3s --retries=3 CMD ...,
    # with moby 28's StartInterval after StartPeriod
    h = HealthConfig(
        test=["CMD-SHELL", "wget -q localhost || exit 1"],
        interval=300_000_000_000,
        timeout=3_000_000_000,
        retries=3,
    )
    assert (
        health_q(h)
        == '&{["CMD-SHELL" "wget -q localhost || exit 1"] "5m0s" "3s" "0s" "0s" \'\\x03\'}'
    )


def test_ports_and_workdirs() -> None:
    assert parse_port_specs(["80", "443/udp", "7000-7002/TCP"]) == [
        "80/tcp", "443/udp", "7000/tcp", "7001/tcp", "7002/tcp",
    ]  # fmt: skip
    with pytest.raises(errdefs.InvalidParameter, match="Invalid containerPort: x"):
        parse_port_specs(["x"])
    with pytest.raises(errdefs.InvalidParameter, match="Invalid proto: foo"):
        parse_port_specs(["80/foo"])
    assert normalize_workdir("", "rel") == "/rel"
    assert normalize_workdir("/a", "b/../c") == "/a/c"
    assert normalize_workdir("/a", "/x//y/") == "/x/y"
    with pytest.raises(errdefs.InvalidParameter):
        normalize_workdir("/a", "")


def test_stages_a_target_needs() -> None:
    stages = parse_dockerfile(
        b"FROM busybox AS a\nFROM busybox AS b\nFROM a AS c\nCOPY --from=1 /x /x\n"
        b"FROM busybox AS d\nFROM c\n"
    ).stages
    assert _unneeded_stages(stages) == {3}
    stages = parse_dockerfile(b"FROM busybox AS a\nFROM busybox AS b\nFROM $X\n").stages
    assert _unneeded_stages(stages) == set()  # a variable could name either


def test_registry_credentials_for_a_pull() -> None:
    hub, mine = AuthConfig(username="u"), AuthConfig(username="m")
    configs = {"https://index.docker.io/v1/": hub, "127.0.0.1:5000": mine}
    assert _resolve_auth(configs, "docker.io") is hub
    assert _resolve_auth(configs, "127.0.0.1:5000") is mine
    assert _resolve_auth(configs, "other.invalid") is None


# -- the cache ---------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ImageStore]:
    driver = new_driver("vfs", tmp_path)
    yield ImageStore(tmp_path / "imagedb", LayerStore(tmp_path / "layerdb", driver))
    driver.cleanup()


def _image(
    store: ImageStore,
    parent: str,
    cmd: list[str],
    created: str,
    history: list[dict[str, Any]] | None = None,
    local: bool = True,
) -> str:
    cc = Config(cmd=cmd, env=["PATH=/bin"])
    doc = {
        "architecture": "amd64",
        "os": "linux",
        "config": msgspec.to_builtins(Config(cmd=["sh"])),
        "container_config": msgspec.to_builtins(cc),
        "created": created,
        "history": history
        if history is not None
        else [{"created": created, "created_by": " ".join(cmd), "empty_layer": True}],
        "rootfs": {"type": "layers", "diff_ids": []},
    }
    img = store.create(json.dumps(doc).encode(), parent=parent)
    if local:
        store.set_built_locally(img.id)
    return img.id


def test_compare_ignores_only_the_containers_own_fields() -> None:
    a = Config(cmd=["x"], env=["A=1"], hostname="h1", image="i1", labels={})
    b = Config(cmd=["x"], env=["A=1"], hostname="h2", image="i2", labels=None)
    assert compare(a, b)
    for change in (
        {"cmd": ["y"]},
        {"env": ["A=2"]},
        {"working_dir": "/w"},
        {"user": "u"},
        {"labels": {"l": "1"}},
    ):
        assert not compare(a, msgspec.structs.replace(b, **change))
    assert not compare(a, None)


def test_local_cache_takes_the_newest_child_built_here(store: ImageStore) -> None:
    amd64 = Platform("linux", "amd64")
    base = _image(store, "", ["base"], "2026-01-01T00:00:00Z", local=False)
    want = Config(cmd=["step"], env=["PATH=/bin"])
    old = _image(store, base, ["step"], "2026-01-02T00:00:00Z")
    new = _image(
        store,
        base,
        ["step"],
        "2026-01-03T00:00:00Z",
        history=[{"created": "x", "empty_layer": True}],
    )
    _image(
        store,
        base,
        ["step"],
        "2026-01-04T00:00:00Z",
        history=[{"created": "y", "empty_layer": True}],
        local=False,
    )
    _image(store, base, ["other"], "2026-01-05T00:00:00Z")
    cache = LocalImageCache(store)
    assert cache.get_cache(base, want, amd64) == new
    assert old != new
    assert cache.get_cache(base, Config(cmd=["nothing"], env=["PATH=/bin"]), amd64) == ""
    assert cache.get_cache(base, want, Platform("linux", "arm64")) == ""
    # FROM scratch: the parentless images whose last step was this one
    assert (
        cache.get_cache("", Config(cmd=["base"], env=["PATH=/bin"]), amd64) == ""
    )  # not built here
    prober = ImageProber(lambda: cache, no_cache=False)
    prober.reset()
    assert prober.probe(base, Config(cmd=["nothing"], env=["PATH=/bin"]), amd64) == ""
    assert prober.probe(base, want, amd64) == ""  # busted by the miss
    prober.reset()
    assert prober.probe(base, want, amd64) == new
    off = ImageProber(lambda: cache, no_cache=True)
    off.reset()
    assert off.probe(base, want, amd64) == ""


def test_cache_from_restores_a_sources_history(store: ImageStore) -> None:
    amd64 = Platform("linux", "amd64")
    base = _image(
        store,
        "",
        ["base"],
        "2026-01-01T00:00:00Z",
        history=[{"created": "t0", "created_by": "base", "empty_layer": True}],
    )
    h = [
        {"created": "t0", "created_by": "base", "empty_layer": True},
        {"created": "t1", "created_by": "/bin/sh -c #(nop)  ENV A=1", "empty_layer": True},
        {"created": "t2", "created_by": '/bin/sh -c #(nop)  CMD ["x"]', "empty_layer": True},
    ]
    # a source whose chain is not here (pulled: no parent, not built locally)
    source = _image(store, "", ["whatever"], "2026-01-02T00:00:00Z", history=h, local=False)
    cache = SourcesImageCache(store, [store.get(source)])  # type: ignore[list-item]
    step1 = Config(cmd=["/bin/sh", "-c", "#(nop) ", "ENV A=1"], env=["PATH=/bin", "A=1"])
    restored = cache.get_cache(base, step1, amd64)
    assert restored and restored not in (base, source)
    img = store.get(restored)
    assert img is not None and img.parent == base
    assert [x.created_by for x in img.config.history] == ["base", "/bin/sh -c #(nop)  ENV A=1"]
    step2 = Config(cmd=["/bin/sh", "-c", "#(nop) ", 'CMD ["x"]'], env=["PATH=/bin", "A=1"])
    assert cache.get_cache(restored, step2, amd64) == source  # the last step is the source
    assert store.get(source).parent == restored  # type: ignore[union-attr]
    assert cache.get_cache(base, Config(cmd=["nope"]), amd64) == ""


# -- builder prune's filters ---------------------------------------------------------------------


def test_cache_filters_select_as_buildkit_records() -> None:
    cfg = msgspec.json.decode(
        b'{"created":"2020-01-02T03:04:05Z","rootfs":{"type":"layers","diff_ids":[]},'
        b'"history":[{"created_by":"/bin/sh -c #(nop) ENV A=1"}]}',
        type=ImageConfig,
    )
    img = Image("sha256:" + "ab" * 32, cfg, None, 0, parent="sha256:" + "cd" * 32)

    def picks(**flt: str) -> bool:
        return cache_filter(Filters({k: [v] for k, v in flt.items()}))(img)

    assert picks() and picks(type="regular") and not picks(type="frontend")
    assert picks(id="ab" * 32) and picks(id="sha256:" + "ab" * 32) and not picks(id="ab")
    assert picks(parent="cd" * 32) and not picks(parent="ab" * 32)
    assert picks(inuse="false") and not picks(inuse="true") and not picks(shared="true")
    assert picks(private="true") and not picks(private="false")
    assert picks(description="/bin/sh -c #(nop) ENV A=1") and not picks(description="x")
    assert picks(until="2021-01-01T00:00:00Z") and not picks(until="2019-01-01T00:00:00Z")
    assert picks(**{"unused-for": "1h"}) and picks(label="ignored=as-dockerd")
    with pytest.raises(errdefs.InvalidParameter, match="conflicting filters"):
        picks(until="1h", **{"unused-for": "2h"})
