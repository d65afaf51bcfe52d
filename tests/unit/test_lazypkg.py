"""A package registered with skip_init: its submodules import without its ``__init__``,
and the first use of the package's own names runs it."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from berth.utils.lazypkg import skip_init

NAME = "berth_lazypkg_probe"


@pytest.fixture
def package(tmp_path: Path) -> Iterator[Path]:
    pkg = tmp_path / NAME
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text(
        "import sys\nsys.modules[__name__].ran = True\nfrom .sub.leaf import VALUE as FROM_INIT\n"
    )
    (pkg / "sub/__init__.py").write_text("")
    (pkg / "sub/leaf.py").write_text("VALUE = 42\n")
    (pkg / "relative.py").write_text("from . import sub\nfrom .sub import leaf\n")
    sys.path.insert(0, str(tmp_path))
    try:
        yield pkg
    finally:
        sys.path.remove(str(tmp_path))
        for name in [m for m in sys.modules if m == NAME or m.startswith(NAME + ".")]:
            del sys.modules[name]
        importlib.invalidate_caches()


def test_submodules_import_without_the_init(package: Path) -> None:
    skip_init(NAME)
    leaf = importlib.import_module(f"{NAME}.sub.leaf")
    assert leaf.VALUE == 42
    # a sibling's `from . import sub` asks the package for the submodule
    assert importlib.import_module(f"{NAME}.relative").leaf is leaf
    assert "ran" not in vars(sys.modules[NAME])


def test_the_packages_own_names_run_the_init_once_asked(package: Path) -> None:
    skip_init(NAME)
    importlib.import_module(f"{NAME}.sub.leaf")
    pkg = sys.modules[NAME]
    assert pkg.FROM_INIT == 42  # runs __init__
    assert pkg.ran is True
    assert pkg.sub.leaf.VALUE == 42
    with pytest.raises(AttributeError):
        _ = pkg.missing


def test_an_imported_package_is_left_alone(package: Path) -> None:
    real = importlib.import_module(NAME)
    skip_init(NAME)
    assert sys.modules[NAME] is real and real.ran is True


def test_not_a_package() -> None:
    with pytest.raises(ImportError):
        skip_init("berth_no_such_package_here")
    with pytest.raises(ImportError):
        skip_init("colorsys")  # a module, not a package
