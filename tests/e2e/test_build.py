"""``docker build`` with the classic builder (POST /build): the real CLI (with and without
``DOCKER_BUILDKIT=0``: without buildx it sends a classic build either way, as berthd's
``/_ping`` says ``Builder-Version: 1``), docker-py and the raw API.

What dockerd 20.10 answered for the same builds (run beside berthd as bench/README.md
says, ``DOCKER_BUILDKIT=0``) is what these expect: the messages of the stream, the
images' history, the cache, the intermediate containers' fate and the errors.  Images
come from busybox:latest; nothing is pulled.
"""

from __future__ import annotations

import base64
import http.server
import io
import json
import os
import re
import signal
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from berth.testing import DOCKER, Berthd, unique_name, wait_for
from tests.e2e.registries import (
    OciImage,
    Registry,
    htpasswd_registry,  # noqa: F401  (fixtures are taken from the module's namespace)
    oci_image,  # noqa: F401
)

BUILT = re.compile(r"Successfully built ([0-9a-f]{12})")


def write(ctx: Path, files: dict[str, str]) -> Path:
    ctx.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        path = ctx / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return ctx


def build(
    d: Berthd,
    images: list[str],
    ctx: Path,
    *args: str,
    stdin: str | None = None,
    check: bool = True,
    classic: bool = True,
) -> subprocess.CompletedProcess[str]:
    """``docker build ARGS CTX``; what it built (and tagged) is removed after the test."""
    env = d.env()
    if classic:
        env["DOCKER_BUILDKIT"] = "0"
    proc = subprocess.run(
        [DOCKER, "build", *args, str(ctx)],
        env=env,
        input=stdin,
        stdin=subprocess.DEVNULL if stdin is None else None,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    for i, arg in enumerate(args):
        if arg == "-t":
            images.insert(0, args[i + 1])
    # every step's image, newest first (a stage's chain is not the final image's parents)
    base = inspect(d, "busybox")["Id"][7:19]
    made = re.findall(r"^ ---> ([0-9a-f]{12})$", proc.stdout, re.MULTILINE)
    images.extend(dict.fromkeys(i for i in reversed(made) if i != base))
    if check and proc.returncode != 0:
        raise AssertionError(
            f"docker build exited {proc.returncode}\nstdout: {proc.stdout}\n"
            f"stderr: {proc.stderr}\nberthd log:\n" + "\n".join(d.log().splitlines()[-30:])
        )
    return proc


def steps(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("Step ")]


def history(d: Berthd, ref: str) -> list[str]:
    out = d.docker("history", "--no-trunc", "--format", "{{.CreatedBy}}", ref).stdout
    return out.splitlines()


def inspect(d: Berthd, ref: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(d.docker("image", "inspect", ref).stdout)[0]
    return doc


def run_out(d: Berthd, ref: str, *cmd: str) -> str:
    return d.docker("run", "--rm", ref, *cmd).stdout


def api_build(
    d: Berthd, body: bytes, query: str = "", headers: dict[str, str] | None = None
) -> tuple[int, list[dict[str, Any]] | dict[str, Any]]:
    status, _, raw = d.request(
        "POST",
        f"/build?{query}",
        body=body,
        headers={"Content-Type": "application/x-tar", **(headers or {})},
    )
    text = raw.decode()
    if status != 200:
        return status, json.loads(text)
    return status, [json.loads(line) for line in text.splitlines() if line.strip()]


def tar_of(files: dict[str, str | bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in files.items():
            raw = data.encode() if isinstance(data, str) else data
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            info.mtime = 1_700_000_000
            tf.addfile(info, io.BytesIO(raw))
    return buf.getvalue()


def built_id(messages: list[dict[str, Any]]) -> str:
    ids = [m["aux"]["ID"] for m in messages if "aux" in m]
    assert ids, messages
    return str(ids[-1])


# -- the CLI ------------------------------------------------------------------------------------


@pytest.mark.parametrize("classic", [True, False], ids=["DOCKER_BUILDKIT=0", "default"])
def test_cli_build_output_history_and_image(
    berthd: Berthd, image_cleanup: list[str], tmp_path: Path, classic: bool
) -> None:
    tag = unique_name("build") + ":v1"
    ctx = write(
        tmp_path,
        {
            "Dockerfile": (
                "FROM busybox\nENV A=1 B=2\nLABEL x=y\nWORKDIR /app/sub\n"
                "RUN echo hello; echo err >&2\nCOPY f.txt /app/\nARG FOO=bar\n"
                f'RUN echo $FOO {tag}\nCMD ["cat", "/app/f.txt"]\n'
            ),
            "f.txt": "from the context\n",
        },
    )
    p = build(berthd, image_cleanup, ctx, "-t", tag, classic=classic)
    assert steps(p.stdout) == [
        "Step 1/9 : FROM busybox",
        "Step 2/9 : ENV A=1 B=2",
        "Step 3/9 : LABEL x=y",
        "Step 4/9 : WORKDIR /app/sub",
        "Step 5/9 : RUN echo hello; echo err >&2",
        "Step 6/9 : COPY f.txt /app/",
        "Step 7/9 : ARG FOO=bar",
        f"Step 8/9 : RUN echo $FOO {tag}",
        'Step 9/9 : CMD ["cat", "/app/f.txt"]',
    ]
    # the RUN's output between its container's announcement and removal; its stderr in
    # red, as dockerd's stderr formatter wraps it
    assert "\x1b[91merr\n\x1b[0m" in p.stdout
    lines = re.sub(r"\x1b\[[0-9;]*m", "", p.stdout).splitlines()
    i = lines.index("Step 5/9 : RUN echo hello; echo err >&2")
    assert re.fullmatch(r" ---> Running in [0-9a-f]{12}", lines[i + 1])
    assert set(lines[i + 2 : i + 4]) == {"hello", "err"}
    assert lines[i + 4] == f"Removing intermediate container {lines[i + 1][-12:]}"
    assert re.fullmatch(r" ---> [0-9a-f]{12}", lines[i + 5])
    # COPY makes no container
    j = lines.index("Step 6/9 : COPY f.txt /app/")
    assert re.fullmatch(r" ---> [0-9a-f]{12}", lines[j + 1])
    assert f"bar {tag}" in lines
    assert re.search(r"Successfully built [0-9a-f]{12}\nSuccessfully tagged " + tag, p.stdout)
    assert run_out(berthd, tag) == "from the context\n"
    created = history(berthd, tag)
    assert created[:9] == [
        '/bin/sh -c #(nop)  CMD ["cat" "/app/f.txt"]',
        f"|1 FOO=bar /bin/sh -c echo $FOO {tag}",
        "/bin/sh -c #(nop)  ARG FOO=bar",
        created[3],
        "/bin/sh -c echo hello; echo err >&2",
        "/bin/sh -c #(nop) WORKDIR /app/sub",
        "/bin/sh -c #(nop)  LABEL x=y",
        "/bin/sh -c #(nop)  ENV A=1 B=2",
        "",
    ]
    assert re.fullmatch(r"/bin/sh -c #\(nop\) COPY file:[0-9a-f]{64} in /app/ ", created[3])
    img = inspect(berthd, tag)
    assert img["Config"]["Env"][-2:] == ["A=1", "B=2"]
    assert img["Config"]["WorkingDir"] == "/app/sub"
    assert img["Config"]["Labels"] == {"x": "y"}
    assert img["Config"]["Cmd"] == ["cat", "/app/f.txt"]
    base = inspect(berthd, "busybox")
    # WORKDIR and COPY add a layer each; the rest add none
    assert len(img["RootFS"]["Layers"]) == len(base["RootFS"]["Layers"]) + 2
    assert berthd.docker("ps", "-a", "-q", "--filter", f"ancestor={tag}").stdout == ""


def test_dockerfile_flag_stdin_and_lowercase_fallback(
    berthd: Berthd, image_cleanup: list[str], tmp_path: Path
) -> None:
    ctx = write(
        tmp_path / "ctx",
        {
            "sub/Other.df": "FROM busybox\nRUN echo from-f\n",
            "dockerfile": "FROM busybox\nENV L=1\n",
        },
    )
    p = build(berthd, image_cleanup, ctx, "-f", str(ctx / "sub/Other.df"))
    assert "from-f" in p.stdout.splitlines()
    # -f -: the CLI adds the Dockerfile to the context under a random name and a
    # .dockerignore that drops it (and itself) from what COPY sees
    p = build(
        berthd, image_cleanup, ctx, "-f", "-", stdin="FROM busybox\nCOPY . /ctx\nRUN ls -A /ctx\n"
    )
    listed = p.stdout.splitlines()
    assert "dockerfile" in listed and "sub" in listed
    assert not any(name.startswith(".dockerfile") or name == ".dockerignore" for name in listed)
    # no Dockerfile, but a dockerfile: moby's lower-case fallback
    p = build(berthd, image_cleanup, ctx)
    assert steps(p.stdout) == ["Step 1/2 : FROM busybox", "Step 2/2 : ENV L=1"]


def test_build_args_labels_tags_and_quiet(
    berthd: Berthd, image_cleanup: list[str], tmp_path: Path
) -> None:
    name = unique_name("build-args")
    ctx = write(
        tmp_path,
        {
            "Dockerfile": f"FROM busybox\nARG WHO=nobody\nARG EMPTY\nRUN echo $WHO > /who\nLABEL n={name}\n"
        },
    )
    p = build(
        berthd, image_cleanup, ctx, "--build-arg", "WHO=someone", "--build-arg", "UNUSED=1",
        "--label", "b=2", "--label", "a=1", "-t", f"{name}:one", "-t", f"{name}:two",
    )  # fmt: skip
    assert "[Warning] One or more build-args [UNUSED] were not consumed" in p.stdout
    # the request's labels come last, one step each, in key order
    assert steps(p.stdout)[-2:] == ["Step 6/7 : LABEL a=1", "Step 7/7 : LABEL b=2"]
    assert p.stdout.rstrip().splitlines()[-2:] == [
        f"Successfully tagged {name}:one",
        f"Successfully tagged {name}:two",
    ]
    assert run_out(berthd, f"{name}:one", "cat", "/who") == "someone\n"
    assert inspect(berthd, f"{name}:two")["Config"]["Labels"] == {"a": "1", "b": "2", "n": name}
    assert "|1 WHO=someone /bin/sh -c echo $WHO > /who" in history(berthd, f"{name}:one")
    # -q prints the image's ID alone
    p = build(berthd, image_cleanup, ctx, "-q", "--build-arg", "WHO=someone")
    ident = p.stdout.strip()
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", ident)
    image_cleanup.append(ident)
    assert ident != inspect(berthd, f"{name}:one")["Id"]  # no labels from the request


def test_target_runs_only_the_stages_it_needs(
    berthd: Berthd, image_cleanup: list[str], tmp_path: Path
) -> None:
    marker = unique_name("stage")
    ctx = write(
        tmp_path,
        {
            "Dockerfile": (
                "ARG BASE=busybox\n"
                f"FROM $BASE AS first\nRUN echo {marker}-first > /first\n"
                f"FROM busybox AS unused\nRUN echo {marker}-unused\n"
                f"FROM busybox AS Final\nCOPY --from=first /first /copied\nRUN cat /copied\n"
                f"FROM busybox\nRUN echo {marker}-after\n"
            )
        },
    )
    p = build(berthd, image_cleanup, ctx, "--target", "final")
    assert steps(p.stdout) == [
        "Step 1/6 : ARG BASE=busybox",
        "Step 2/6 : FROM $BASE AS first",
        f"Step 3/6 : RUN echo {marker}-first > /first",
        "Step 4/6 : FROM busybox AS Final",
        "Step 5/6 : COPY --from=first /first /copied",
        "Step 6/6 : RUN cat /copied",
    ]
    assert f"{marker}-first" in p.stdout.splitlines()
    assert f"{marker}-unused" not in p.stdout and f"{marker}-after" not in p.stdout
    p = build(berthd, image_cleanup, ctx, "--target", "nosuch", check=False)
    assert p.returncode != 0
    assert "failed to reach build target nosuch in Dockerfile" in p.stderr


def test_cache_reuse_no_cache_and_cache_bust(
    berthd: Berthd, image_cleanup: list[str], tmp_path: Path
) -> None:
    marker = unique_name("cache")
    ctx = write(
        tmp_path,
        {
            "Dockerfile": f'FROM busybox\nENV M={marker}\nCOPY f /f\nRUN cat /f\nCMD ["true"]\n',
            "f": "one\n",
        },
    )
    first = build(berthd, image_cleanup, ctx)
    ident = BUILT.findall(first.stdout)[-1]
    second = build(berthd, image_cleanup, ctx)
    assert second.stdout.count(" ---> Using cache") == 4
    assert " ---> Running in" not in second.stdout
    assert BUILT.findall(second.stdout)[-1] == ident
    # a touch keeps the cache, new content busts it from the COPY on
    os.utime(ctx / "f", (1, 1))
    assert build(berthd, image_cleanup, ctx).stdout.count(" ---> Using cache") == 4
    (ctx / "f").write_text("two\n")
    third = build(berthd, image_cleanup, ctx)
    assert third.stdout.count(" ---> Using cache") == 1
    assert "two" in third.stdout.splitlines()
    fresh = build(berthd, image_cleanup, ctx, "--no-cache")
    assert " ---> Using cache" not in fresh.stdout
    assert BUILT.findall(fresh.stdout)[-1] != BUILT.findall(third.stdout)[-1]


def test_cache_from_takes_the_images_chain(
    berthd: Berthd, image_cleanup: list[str], tmp_path: Path
) -> None:
    marker = unique_name("cachefrom")
    ctx = write(tmp_path, {"Dockerfile": f"FROM busybox\nRUN echo {marker} > /m\nENV Q=1\n"})
    tag = f"{marker}:src"
    build(berthd, image_cleanup, ctx, "-t", tag)
    p = build(berthd, image_cleanup, ctx, "--cache-from", tag)
    assert p.stdout.count(" ---> Using cache") == 2
    assert BUILT.findall(p.stdout)[-1] == inspect(berthd, tag)["Id"][7:19]
    # an image that is not in the chain is no cache
    other = build(berthd, image_cleanup, ctx, "--cache-from", "busybox")
    assert " ---> Using cache" not in other.stdout


def test_failing_run_keeps_its_container_unless_forcerm(
    berthd: Berthd, image_cleanup: list[str], tmp_path: Path
) -> None:
    marker = unique_name("fail")
    ctx = write(tmp_path, {"Dockerfile": f"FROM busybox\nENV M={marker}\nRUN echo hi && exit 3\n"})
    p = build(berthd, image_cleanup, ctx, "-t", f"{marker}:x", check=False)
    assert p.returncode == 3
    assert "The command '/bin/sh -c echo hi && exit 3' returned a non-zero code: 3" in p.stderr
    assert "hi" in p.stdout.splitlines()
    assert "Successfully" not in p.stdout
    assert berthd.docker("image", "inspect", f"{marker}:x", check=False).returncode != 0
    cid = re.findall(r"Running in ([0-9a-f]{12})", p.stdout)[-1]
    state = json.loads(berthd.docker("inspect", cid).stdout)[0]
    assert state["State"]["Status"] == "exited" and state["State"]["ExitCode"] == 3
    image_cleanup.insert(0, state["Image"])
    berthd.docker("rm", cid)
    p = build(berthd, image_cleanup, ctx, "--force-rm", check=False)
    assert p.returncode == 3
    cid = re.findall(r"Running in ([0-9a-f]{12})", p.stdout)[-1]
    assert f"Removing intermediate container {cid}" in p.stdout
    assert berthd.docker("inspect", cid, check=False).returncode != 0


def _build_dirs(d: Berthd) -> set[Path]:
    """What builds left under the daemon's tmp dir (a download, a scratch root)."""
    return set((d.data_root / "tmp").glob("build-*"))


def _spools(d: Berthd) -> list[str]:
    """The files berthd holds open under its tmp dir: a build's context spool."""
    assert d.proc is not None
    fds = Path(f"/proc/{d.proc.pid}/fd")
    tmp = str(d.data_root / "tmp") + "/"
    found = []
    for fd in fds.iterdir():
        try:
            target = os.readlink(fd)
        except FileNotFoundError:
            continue  # closed meanwhile
        if target.startswith(tmp):
            found.append(target)
    return found


def test_parse_errors_and_bad_contexts_are_400(berthd: Berthd) -> None:
    before = _build_dirs(berthd)
    status, body = api_build(berthd, tar_of({"Dockerfile": "FROM busybox\nFOO bar\n"}))
    assert (status, body) == (
        400,
        {"message": "dockerfile parse error line 2: unknown instruction: FOO"},
    )
    status, body = api_build(berthd, b"this is not a tar archive\n" * 40)
    assert status == 400
    assert isinstance(body, dict) and "not a valid tar" in body["message"]
    status, body = api_build(berthd, tar_of({"other": "x"}))
    assert (status, body) == (400, {"message": "Cannot locate specified Dockerfile: Dockerfile"})
    status, body = api_build(berthd, tar_of({"Dockerfile": "FROM busybox\n"}), "version=2")
    assert (status, body) == (400, {"message": "buildkit is not enabled on daemon"})
    status, body = api_build(berthd, tar_of({"Dockerfile": "FROM busybox\n"}), "squash=1")
    assert status == 400
    status, body = api_build(berthd, tar_of({"Dockerfile": "FROM busybox\n"}), "t=Bad:Name")
    assert status == 400
    # a failed build's context is left nowhere
    assert _build_dirs(berthd) <= before
    assert list((berthd.data_root / "tmp").glob("build-*")) == []


def test_copy_from_context_and_multi_stage(
    berthd: Berthd, image_cleanup: list[str], tmp_path: Path
) -> None:
    tag = unique_name("copy") + ":1"
    ctx = write(
        tmp_path,
        {
            "Dockerfile": (
                "FROM busybox AS build\nCOPY src/ /src/\nRUN cat /src/a /src/b > /joined\n"
                "FROM scratch\nCOPY --from=build /joined /joined\nCOPY --from=0 /bin/busybox /busybox\n"
                'ENTRYPOINT ["/busybox"]\n'
            ),
            "src/a": "A\n",
            "src/b": "B\n",
        },
    )
    build(berthd, image_cleanup, ctx, "-t", tag)
    assert run_out(berthd, tag, "cat", "/joined") == "A\nB\n"
    assert len(inspect(berthd, tag)["RootFS"]["Layers"]) == 2
    p = build(
        berthd,
        image_cleanup,
        write(tmp_path / "bad", {"Dockerfile": "FROM busybox\nCOPY nosuch /x\n"}),
        check=False,
    )
    assert p.returncode != 0
    assert "COPY failed: file not found in build context" in p.stderr


def _background_build(d: Berthd, *args: str) -> subprocess.Popen[str]:
    """A classic ``docker build ARGS`` left running, its output to read line by line."""
    return subprocess.Popen(
        [DOCKER, "build", *args],
        env={**d.env(), "DOCKER_BUILDKIT": "0"},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def test_client_gone_cancels_the_build(berthd: Berthd, tmp_path: Path) -> None:
    before = _build_dirs(berthd)
    marker = unique_name("cancel")
    ctx = write(tmp_path, {"Dockerfile": f"FROM busybox\nRUN echo {marker} && sleep 300\n"})
    cli = _background_build(berthd, "--no-cache", str(ctx))
    try:
        cid = ""
        assert cli.stdout is not None
        for line in cli.stdout:
            found = re.search(r"Running in ([0-9a-f]{12})", line)
            if found:
                cid = found.group(1)
            if line.strip() == marker:
                break
        assert cid
    finally:
        cli.send_signal(signal.SIGKILL)
        cli.wait()
        if cli.stdout is not None:
            cli.stdout.close()

    def gone() -> bool:
        return berthd.docker("inspect", cid, check=False).returncode != 0

    wait_for(gone, what="the step's container removed")
    assert berthd.docker("ps", "-q", "--filter", f"id={cid}").stdout == ""
    wait_for(lambda: _build_dirs(berthd) <= before, what="the context removed")
    wait_for(lambda: not _spools(berthd), what="the spool closed")


def test_events_of_a_build(berthd: Berthd, image_cleanup: list[str], tmp_path: Path) -> None:
    tag = unique_name("events") + ":1"
    ctx = write(tmp_path, {"Dockerfile": f"FROM busybox\nENV T={tag}\nRUN true\n"})
    since = time.time()
    build(berthd, image_cleanup, ctx, "-t", tag, "--no-cache")
    out = berthd.docker(
        "events", "--since", f"{since:.3f}", "--until", f"{time.time() + 1:.3f}",
        "--format", "{{json .}}",
    ).stdout  # fmt: skip
    seen = [json.loads(line) for line in out.splitlines()]
    containers = [(e["Action"], e["Actor"]["ID"][:12]) for e in seen if e["Type"] == "container"]
    ids = list(dict.fromkeys(c for _, c in containers))
    assert len(ids) == 2
    assert [a for a, c in containers if c == ids[0]] == ["create", "destroy"]
    assert [a for a, c in containers if c == ids[1]] == [
        "create",
        "attach",
        "start",
        "die",
        "destroy",
    ]
    tags = [e for e in seen if e["Type"] == "image" and e["Action"] == "tag"]
    assert [e["Actor"]["Attributes"]["name"] for e in tags] == [tag]


def test_cache_survives_a_restart(fresh_berthd: Berthd, tmp_path: Path) -> None:
    d = fresh_berthd
    ctx = write(
        tmp_path, {"Dockerfile": "FROM busybox\nRUN echo once > /once\nCOPY f /f\n", "f": "x\n"}
    )
    first = build(d, [], ctx)
    d.stop()
    d.start()
    again = build(d, [], ctx)
    assert again.stdout.count(" ---> Using cache") == 2
    assert BUILT.findall(again.stdout) == BUILT.findall(first.stdout)


# -- docker-py and the raw API -----------------------------------------------------------------


def test_docker_py_build_and_stream(berthd: Berthd, image_cleanup: list[str]) -> None:
    client = berthd.client()
    tag = unique_name("dockerpy") + ":1"
    context = tar_of({"Dockerfile": f"FROM busybox\nRUN echo built {tag} > /built\n", "x": "y"})
    # docker-py sends rm=False unless told: dockerd then keeps the step's container
    image, logs = client.images.build(
        fileobj=io.BytesIO(context), custom_context=True, tag=tag, rm=True
    )
    image_cleanup.append(tag)
    assert tag in image.tags
    assert any("Successfully built" in str(entry.get("stream", "")) for entry in logs)
    assert client.containers.run(tag, ["cat", "/built"], remove=True) == f"built {tag}\n".encode()
    messages = list(
        client.api.build(fileobj=io.BytesIO(context), custom_context=True, decode=True, tag=tag)
    )
    assert messages[0] == {"stream": "Step 1/2 : FROM busybox"}
    assert messages[1] == {"stream": "\n"}
    assert {"stream": " ---> Using cache\n"} in messages
    assert messages[-1] == {"stream": f"Successfully tagged {tag}\n"}
    assert {"aux": {"ID": image.id}} in messages
    # a failing RUN: the error's detail carries the exit code
    bad = tar_of({"Dockerfile": "FROM busybox\nRUN exit 7\n"})
    messages = list(
        client.api.build(fileobj=io.BytesIO(bad), custom_context=True, decode=True, forcerm=True)
    )
    assert messages[-1] == {
        "errorDetail": {
            "code": 7,
            "message": "The command '/bin/sh -c exit 7' returned a non-zero code: 7",
        },
        "error": "The command '/bin/sh -c exit 7' returned a non-zero code: 7",
    }
    client.close()


@pytest.fixture
def http_dir(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    served = tmp_path / "served"
    served.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(served), **kwargs)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield served, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_remote_contexts(
    berthd: Berthd, image_cleanup: list[str], http_dir: tuple[Path, str]
) -> None:
    served, base = http_dir
    marker = unique_name("remote")
    context = tar_of(
        {
            "Dockerfile": f"FROM busybox\nCOPY . /ctx\nRUN ls -A /ctx && echo {marker}\n",
            ".dockerignore": "secret*\n!secret-kept\n",
            "kept": "k",
            "secret-1": "s",
            "secret-kept": "s",
        }
    )
    (served / "ctx.tar").write_bytes(context)
    status, messages = api_build(berthd, b"", "remote=" + base + "/ctx.tar")
    assert status == 200 and isinstance(messages, list)
    image_cleanup.append(built_id(messages))
    lines = "".join(m.get("stream", "") for m in messages).splitlines()
    i = lines.index(marker)
    assert sorted(lines[i - 4 : i]) == [".dockerignore", "Dockerfile", "kept", "secret-kept"]
    # a plain Dockerfile builds with no context
    (served / "Dockerfile").write_text(f"FROM busybox\nRUN echo {marker}-plain\n")
    status, messages = api_build(berthd, b"", "remote=" + base + "/Dockerfile")
    assert status == 200 and isinstance(messages, list)
    image_cleanup.append(built_id(messages))
    assert {"stream": f"{marker}-plain\n"} in messages
    status, _ = api_build(berthd, b"", "remote=" + base + "/nosuch.tar")
    assert status == 404
    status, _ = api_build(berthd, b"", "remote=git://127.0.0.1/x.git")
    assert status == 501


def test_run_steps_take_the_builds_host_settings(
    berthd: Berthd, image_cleanup: list[str], tmp_path: Path
) -> None:
    marker = unique_name("hostcfg")
    ctx = write(
        tmp_path,
        {
            "Dockerfile": (
                f"FROM busybox\nRUN echo {marker} && ls /sys/class/net && grep myhost /etc/hosts"
                " && df -k /dev/shm | tail -1\n"
            )
        },
    )
    p = build(
        berthd, image_cleanup, ctx, "--network", "none", "--add-host", "myhost:10.1.2.3",
        "--shm-size", "16m", "--memory", "64m", "--platform", "linux/amd64", "--rm=false",
    )  # fmt: skip
    lines = p.stdout.splitlines()
    i = lines.index(marker)
    assert lines[i + 1] == "lo"  # no network but loopback
    assert lines[i + 2].split() == ["10.1.2.3", "myhost"]
    assert lines[i + 3].split()[1] == "16384"
    # --rm=false: the step's container stays, as dockerd leaves it
    cid = re.findall(r"Running in ([0-9a-f]{12})", p.stdout)[-1]
    assert f"Removing intermediate container {cid}" not in p.stdout
    state = json.loads(berthd.docker("inspect", cid).stdout)[0]
    assert state["HostConfig"]["NetworkMode"] == "none"
    assert state["HostConfig"]["Memory"] == 64 << 20
    assert state["HostConfig"]["LogConfig"]["Type"] == "none"
    berthd.docker("rm", cid)


def test_quiet_build_that_fails_shows_everything(berthd: Berthd) -> None:
    status, messages = api_build(
        berthd, tar_of({"Dockerfile": "FROM busybox\nRUN echo loud && exit 2\n"}), "q=1&forcerm=1"
    )
    assert status == 200 and isinstance(messages, list)
    assert messages[0] == {"stream": "Step 1/2 : FROM busybox"}
    assert {"stream": "loud\n"} in messages
    assert messages[-1]["errorDetail"]["code"] == 2


def test_onbuild_triggers_run_in_the_child(
    berthd: Berthd, image_cleanup: list[str], tmp_path: Path
) -> None:
    parent = unique_name("onbuild") + ":parent"
    build(
        berthd, image_cleanup, write(tmp_path / "p", {"Dockerfile": (
            "FROM busybox\nONBUILD RUN echo triggered > /t\nONBUILD COPY f /f\n"
        )}), "-t", parent,
    )  # fmt: skip
    assert inspect(berthd, parent)["Config"]["OnBuild"] == ["RUN echo triggered > /t", "COPY f /f"]
    child = unique_name("onbuild") + ":child"
    ctx = write(tmp_path / "c", {"Dockerfile": f"FROM {parent}\nRUN cat /t /f\n", "f": "from-f\n"})
    p = build(berthd, image_cleanup, ctx, "-t", child)
    lines = p.stdout.splitlines()
    i = lines.index(f"Step 1/2 : FROM {parent}")
    assert lines[i + 1] == "# Executing 2 build triggers"
    assert "triggered" in lines and "from-f" in lines
    assert inspect(berthd, child)["Config"]["OnBuild"] is None


def test_add_downloads_a_url(
    berthd: Berthd, image_cleanup: list[str], tmp_path: Path, http_dir: tuple[Path, str]
) -> None:
    served, base = http_dir
    (served / "payload.txt").write_text("downloaded\n")
    tag = unique_name("add") + ":1"
    ctx = write(tmp_path, {"Dockerfile": f"FROM busybox\nADD {base}/payload.txt /dl/\n"})
    build(berthd, image_cleanup, ctx, "-t", tag)
    assert run_out(berthd, tag, "cat", "/dl/payload.txt") == "downloaded\n"


def test_from_pulls_with_the_clis_credentials(
    berthd: Berthd,
    image_cleanup: list[str],
    tmp_path: Path,
    htpasswd_registry: Registry,  # noqa: F811
    oci_image: OciImage,  # noqa: F811
) -> None:
    reg = htpasswd_registry
    reg.push(oci_image, "private:latest")
    ref = f"{reg.host}/private:latest"
    image_cleanup.append(ref)
    ctx = write(tmp_path / "ctx", {"Dockerfile": f"FROM {ref}\nRUN cat /{oci_image.layer2_path}\n"})
    # no credentials: the pull fails in the stream, after the step's line
    p = build(berthd, image_cleanup, ctx, check=False)
    assert p.returncode != 0
    assert f"Step 1/2 : FROM {ref}" in p.stdout
    # the CLI sends every credential it has in X-Registry-Config
    token = base64.b64encode(f"{reg.username}:{reg.password}".encode()).decode()
    config = tmp_path / "config"
    config.mkdir()
    (config / "config.json").write_text(json.dumps({"auths": {reg.host: {"auth": token}}}))
    env = {**berthd.env(), "DOCKER_BUILDKIT": "0", "DOCKER_CONFIG": str(config)}
    proc = subprocess.run(
        [DOCKER, "build", str(ctx)], env=env, capture_output=True, text=True, timeout=300,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    made = re.findall(r"^ ---> ([0-9a-f]{12})$", proc.stdout, re.MULTILINE)
    image_cleanup[:0] = list(reversed(made[1:]))
    assert "Pulling from private" in proc.stdout
    assert oci_image.layer2_content.decode().strip() in proc.stdout


def test_relative_volume_lands_under_the_root(
    berthd: Berthd, image_cleanup: list[str], tmp_path: Path
) -> None:
    """``VOLUME data`` (relative) is kept as written in the config, as dockerd keeps it,
    and later steps and containers mount it at /data instead of refusing it."""
    tag = unique_name("relvol") + ":v1"
    ctx = write(tmp_path / "ctx", {"Dockerfile": "FROM busybox\nVOLUME data\nRUN ls -d /data\n"})
    build(berthd, image_cleanup, ctx, "-t", tag)
    assert inspect(berthd, tag)["Config"]["Volumes"] == {"data": {}}
    out = berthd.docker("run", "--rm", tag, "sh", "-c", "grep ' /data ' /proc/self/mountinfo")
    assert out.stdout.strip(), "no mount at /data"


def test_the_context_is_written_once_to_an_unlinked_spool(
    berthd: Berthd, image_cleanup: list[str], tmp_path: Path
) -> None:
    """While a build runs, its context is one unlinked file the daemon holds (nothing of
    it unpacked, nothing with a name under the tmp dir); the build's end lets it go."""
    before = _build_dirs(berthd)
    marker = unique_name("spool")
    ctx = write(
        tmp_path / "ctx",
        {
            "Dockerfile": f"FROM busybox\nCOPY . /ctx/\nRUN echo {marker} && sleep 2\n",
            "f": "one\n" * 10000,
            "sub/g": "two\n",
        },
    )
    tag = unique_name("spool") + ":v1"
    image_cleanup.append(tag)
    cli = _background_build(berthd, "-t", tag, str(ctx))
    try:
        assert cli.stdout is not None
        held: list[str] = []
        for line in cli.stdout:
            if line.strip() == marker:
                held = _spools(berthd)
                break
        assert len(held) == 1 and held[0].endswith(" (deleted)"), held
        assert _build_dirs(berthd) <= before
        cli.stdout.read()
        assert cli.wait(timeout=120) == 0
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
        if cli.stdout is not None:
            cli.stdout.close()
    wait_for(lambda: not _spools(berthd), what="the spool closed")
    out = berthd.docker("run", "--rm", tag, "sh", "-c", "wc -l /ctx/f; cat /ctx/sub/g").stdout
    assert out.split() == ["10000", "/ctx/f", "two"]


def _made(out: str) -> list[str]:
    """The short IDs of the images a build's steps made, in order (FROM's not made)."""
    return re.findall(r"^ ---> ([0-9a-f]{12})$", out, re.MULTILINE)[1:]


def _exists(d: Berthd, ref: str) -> bool:
    return d.docker("image", "inspect", ref, check=False).returncode == 0


def test_builder_prune_removes_what_only_the_cache_holds(
    berthd: Berthd, image_cleanup: list[str], tmp_path: Path
) -> None:
    """By default what builds left behind goes (a retagged build's old steps); with
    ``-a`` the steps under named images too: they keep working, without parents, and
    their next build starts cold."""
    kept_tag, moved_tag = unique_name("pkeep") + ":v1", unique_name("pmove") + ":v1"
    kept = write(
        tmp_path / "kept",
        {"Dockerfile": f"FROM busybox\nENV M={kept_tag}\nRUN echo one > /one\nLABEL k=v\n"},
    )
    kept_steps = _made(build(berthd, image_cleanup, kept, "-t", kept_tag).stdout)
    moved = tmp_path / "moved"
    write(moved, {"Dockerfile": f"FROM busybox\nENV M={moved_tag}\nRUN echo x > /x\n"})
    old = _made(build(berthd, image_cleanup, moved, "-t", moved_tag).stdout)
    write(moved, {"Dockerfile": f"FROM busybox\nENV M={moved_tag}\nRUN echo y > /y\n"})
    build(berthd, image_cleanup, moved, "-t", moved_tag)
    old_id = inspect(berthd, old[-1])["Id"][7:]

    out = berthd.docker("builder", "prune", "-f").stdout
    assert out.startswith("Deleted build cache objects:\n") and old_id in out.splitlines()
    assert out.splitlines()[-1].startswith("Total reclaimed space: ")
    assert not _exists(berthd, old[-1])  # the old build's last step
    assert _exists(berthd, old[0])  # its ENV step is under the new build's too
    assert all(_exists(berthd, step) for step in kept_steps)
    again = build(berthd, image_cleanup, kept, "-t", kept_tag)
    assert again.stdout.count(" ---> Using cache") == 3

    first = inspect(berthd, kept_steps[0])["Id"][7:]
    out = berthd.docker("builder", "prune", "-a", "-f").stdout
    assert first in out.splitlines()
    assert out.endswith("\nTotal reclaimed space: 0B\n")  # their layers are the image's
    assert not any(_exists(berthd, step) for step in kept_steps[:-1])
    assert inspect(berthd, kept_tag)["Parent"] == ""
    assert berthd.docker("run", "--rm", kept_tag, "cat", "/one").stdout == "one\n"
    assert "<missing>" in berthd.docker("history", kept_tag).stdout
    cold = build(berthd, image_cleanup, kept, "-t", kept_tag)
    assert " ---> Using cache" not in cold.stdout
    assert berthd.docker("builder", "prune", "-a", "-f", "--filter", "type=frontend").stdout == (
        "Total reclaimed space: 0B\n"
    )
