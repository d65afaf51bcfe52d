"""Imports point down the layer table of DESIGN.md ("each package may import only
packages below it; nothing imports api"), checked on the source with ``ast``.

A package may import itself or anything in the same or a lower row.  TYPE_CHECKING
imports count: a type is a dependency too.  A new top-level package fails here until
it is given a row, so that its place is a decision, not an accident.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"

#: DESIGN.md's table, top to bottom.  Its rows from container to layer are grouped in
#: two: the services over the stores (none imports another today), and archive with
#: layer, since DESIGN lists archive above layer yet has it "used by layers".
#: ``testing`` drives a berthd from outside, as cli does; ``utils`` and ``berth``
#: itself (the version constants) are leaves.
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"cli", "config", "testing"}),
    frozenset({"api"}),
    frozenset({"backend"}),
    frozenset({"daemon"}),
    frozenset({"container", "builder", "image", "distribution"}),
    frozenset({"archive", "layer"}),
    frozenset({"graphdriver"}),
    frozenset({"runtime", "network", "volume", "logger", "events"}),
    frozenset({"types", "errdefs", "utils", "metrics", "berth"}),
)

RANK = {pkg: rank for rank, row in enumerate(LAYERS) for pkg in row}

#: containerd's generated gRPC stubs (git-ignored, made at install) import only each other
GENERATED = SRC / "berth" / "runtime" / "_api"


def _modules() -> Iterator[tuple[Path, str]]:
    for path in sorted((SRC / "berth").rglob("*.py")):
        if path.is_relative_to(GENERATED):
            continue
        parts = path.relative_to(SRC).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield path, ".".join(parts)


def _package(module: str) -> str:
    """``berth.daemon.start`` → ``daemon``; ``berth`` → ``berth``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "berth"


def _is_module(name: str) -> bool:
    """Whether ``berth.<name>`` is a module or package (else a name in berth/__init__)."""
    return (SRC / "berth" / f"{name}.py").exists() or (SRC / "berth" / name).is_dir()


def _imports(path: Path, module: str) -> Iterator[tuple[int, str]]:
    """(line, imported berth module or ``berth.<name>``) for each import of *path*."""
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_pkg else 0)]
                base = ".".join(anchor + ([base] if base else []))
            if base == "berth":  # from berth import errdefs / __version__
                for alias in node.names:
                    yield node.lineno, f"berth.{alias.name}" if _is_module(alias.name) else base
            else:
                yield node.lineno, base


def _violations() -> list[str]:
    out = []
    for path, module in _modules():
        src = _package(module)
        for line, target in _imports(path, module):
            if target != "berth" and not target.startswith("berth."):
                continue
            dst = _package(target)
            if dst == src:
                continue
            if src not in RANK or dst not in RANK:
                out.append(f"{path.relative_to(SRC)}:{line}: {src} or {dst} has no row")
            elif RANK[dst] < RANK[src]:
                out.append(f"{path.relative_to(SRC)}:{line}: {src} imports {target} (above it)")
    return out


def test_every_package_has_a_row() -> None:
    packages = {_package(module) for _, module in _modules()}
    assert packages - RANK.keys() == set()


def test_imports_point_down() -> None:
    assert _violations() == []


def test_nothing_imports_the_daemon_from_backend_or_api() -> None:
    """The API knows the daemon only through backend.py, whose contracts the daemon
    implements: the table puts backend above daemon, yet a contract that imports its
    implementation points the wrong way (issue 10)."""
    bad = [
        f"{path.relative_to(SRC)}:{line}: {target}"
        for path, module in _modules()
        if _package(module) in ("api", "backend")
        for line, target in _imports(path, module)
        if target == "berth.daemon" or target.startswith("berth.daemon.")
    ]
    assert bad == []


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        (
            "daemon/x.py",
            "from berth.api import server\n",
            "daemon imports berth.api (above it)",
        ),
        (
            "layer/__init__.py",
            "import berth.image.store\n",
            "layer imports berth.image.store (above it)",
        ),
        ("image/x.py", "from berth import errdefs, __version__\nimport berth.types.image\n", None),
    ],
)
def test_the_check_sees_an_upward_import(
    module: str, source: str, expected: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The parser finds both import forms (a check that passes on nothing proves nothing)."""
    fake = tmp_path / "berth" / module
    fake.parent.mkdir(parents=True)
    fake.write_text(source)
    monkeypatch.setattr(sys.modules[__name__], "SRC", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "GENERATED", tmp_path / "x")
    got = [v.split(": ", 1)[1] for v in _violations()]
    assert got == ([expected] if expected else [])
