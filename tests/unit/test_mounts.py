"""berth.volume.mounts: ``-v`` parsing and ``--mount`` validation."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from berth import errdefs
from berth.types.container import (
    BindOptions,
    Mount,
    MountPoint,
    TmpfsOptions,
    VolumeDriverConfig,
    VolumeOptions,
)
from berth.volume.mounts import (
    MountError,
    mount_point,
    parse_bind,
    validate_mount,
    volume_source,
)

ROOT = "/var/lib/berth"


def test_mount_error_is_invalid_parameter() -> None:
    assert issubclass(MountError, errdefs.InvalidParameter)


def test_volume_source() -> None:
    assert volume_source(ROOT, "v") == "/var/lib/berth/volumes/v/_data"


# -- parse_bind (-v) -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            "/host:/ctr",
            MountPoint(type="bind", source="/host", destination="/ctr", propagation="rprivate"),
        ),
        (
            "/host/sub/../:/ctr//x/:ro",
            MountPoint(
                type="bind",
                source="/host",
                destination="/ctr/x",
                mode="ro",
                rw=False,
                propagation="rprivate",
            ),
        ),
        (
            "/h:/c:rw,rshared",
            MountPoint(
                type="bind",
                source="/h",
                destination="/c",
                mode="rw,rshared",
                propagation="rshared",
            ),
        ),
        (
            "/h:/c:Z,ro,slave",
            MountPoint(
                type="bind",
                source="/h",
                destination="/c",
                mode="Z,ro,slave",
                rw=False,
                propagation="slave",
            ),
        ),
        (
            "/h:/c:delegated",
            MountPoint(
                type="bind",
                source="/h",
                destination="/c",
                mode="delegated",
                propagation="rprivate",
            ),
        ),
        (
            "data:/data",
            MountPoint(
                type="volume",
                name="data",
                source="/var/lib/berth/volumes/data/_data",
                destination="/data",
                driver="local",
                mode="z",
            ),
        ),
        (
            "data:/data/:ro,nocopy",
            MountPoint(
                type="volume",
                name="data",
                source="/var/lib/berth/volumes/data/_data",
                destination="/data",
                driver="local",
                mode="ro,nocopy",
                rw=False,
            ),
        ),
    ],
)
def test_parse_bind(raw: str, expected: MountPoint) -> None:
    assert parse_bind(raw, ROOT) == expected


def test_parse_bind_volume_driver_applies_to_volumes_only() -> None:
    vol = parse_bind("vol:/d", ROOT, "nfs")
    assert (vol.type, vol.driver) == ("volume", "nfs")
    bind = parse_bind("/h:/d", ROOT, "nfs")
    assert (bind.type, bind.driver) == ("bind", "")


def test_parse_bind_anonymous_volume() -> None:
    a = parse_bind("/data", ROOT)
    b = parse_bind("/data/", ROOT)
    for mp in (a, b):
        assert mp.type == "volume"
        assert re.fullmatch(r"[0-9a-f]{64}", mp.name)
        assert mp.source == f"{ROOT}/volumes/{mp.name}/_data"
        assert mp.destination == "/data"
        assert mp.driver == "local"
        assert mp.mode == "z"
        assert mp.rw is True
    assert a.name != b.name


@pytest.mark.parametrize(
    "raw", ["", ":/x", "/ctr:ro", "/ctr:rw,z", "/src:", "a:b:c:d", "/a:/b:ro:x"]
)
def test_parse_bind_invalid_spec(raw: str) -> None:
    with pytest.raises(MountError) as exc:
        parse_bind(raw, ROOT)
    assert str(exc.value) == f"invalid volume specification: '{raw}'"


@pytest.mark.parametrize(
    ("mode"), ["bogus", "ro,rw", "z,Z", "shared,slave", "nocopy,nocopy", "ro,", "cached,default"]
)
def test_parse_bind_invalid_mode(mode: str) -> None:
    with pytest.raises(MountError) as exc:
        parse_bind(f"/h:/c:{mode}", ROOT)
    assert str(exc.value) == f"invalid mode: {mode}"


@pytest.mark.parametrize(
    ("raw", "detail"),
    [
        ("/h:/", "invalid mount config for type \"bind\": invalid specification: "
                 "destination can't be '/'"),
        ("/h:/x/..", "invalid mount config for type \"bind\": invalid specification: "
                     "destination can't be '/'"),
        ("/h:rel", "invalid mount config for type \"bind\": invalid mount path: 'rel' "
                   "mount path must be absolute"),
        ("v:rel:ro", "invalid mount config for type \"volume\": invalid mount path: 'rel' "
                     "mount path must be absolute"),
        ("rel", "invalid mount config for type \"volume\": invalid mount path: 'rel' "
                "mount path must be absolute"),
    ],
)  # fmt: skip
def test_parse_bind_bad_destination(raw: str, detail: str) -> None:
    with pytest.raises(MountError) as exc:
        parse_bind(raw, ROOT)
    assert str(exc.value) == f"invalid volume specification: '{raw}': {detail}"


# -- validate_mount (--mount) --------------------------------------------------------


def _err(m: Mount, check_bind_source: bool = True) -> str:
    with pytest.raises(MountError) as exc:
        validate_mount(m, check_bind_source)
    return str(exc.value)


def test_bind_source_must_exist(tmp_path: Path) -> None:
    assert not os.path.exists("/nope")
    assert _err(Mount(type="bind", source="/nope", target="/x")) == (
        'invalid mount config for type "bind": bind source path does not exist: /nope'
    )
    missing = str(tmp_path / "missing")
    assert _err(Mount(type="bind", source=missing, target="/x")) == (
        f'invalid mount config for type "bind": bind source path does not exist: {missing}'
    )
    validate_mount(Mount(type="bind", source=str(tmp_path), target="/x"))
    validate_mount(
        Mount(
            type="bind",
            source=missing,
            target="/x",
            bind_options=BindOptions(create_mountpoint=True),
        )
    )
    validate_mount(Mount(type="bind", source=missing, target="/x"), check_bind_source=False)
    assert not os.path.exists(missing)


@pytest.mark.parametrize(
    ("m", "detail"),
    [
        (Mount(type="bind", source="/tmp", target=""), "field Target must not be empty"),
        (
            Mount(type="bind", source="/tmp", target="/"),
            "invalid specification: destination can't be '/'",
        ),
        (
            Mount(type="bind", source="/tmp", target="rel"),
            "invalid mount path: 'rel' mount path must be absolute",
        ),
        (Mount(type="bind", target="/x"), "field Source must not be empty"),
        (
            Mount(type="bind", source="/tmp", target="/x", bind_options=BindOptions("bogus")),
            "invalid propagation mode: bogus",
        ),
        (
            Mount(type="bind", source="/tmp", target="/x", volume_options=VolumeOptions()),
            "field VolumeOptions must not be specified",
        ),
        (
            Mount(type="bind", source="tmp", target="/x"),
            "invalid mount path: 'tmp' mount path must be absolute",
        ),
    ],
)
def test_invalid_bind_mounts(m: Mount, detail: str) -> None:
    assert _err(m) == f'invalid mount config for type "bind": {detail}'


def test_valid_bind_propagation() -> None:
    for prop in ("private", "rprivate", "slave", "rslave", "shared", "rshared"):
        validate_mount(
            Mount(type="bind", source="/tmp", target="/x", bind_options=BindOptions(prop))
        )


@pytest.mark.parametrize(
    ("m", "detail"),
    [
        (
            Mount(type="volume", source="v", target="/x", bind_options=BindOptions()),
            "field BindOptions must not be specified",
        ),
        (
            Mount(type="volume", target="/x", volume_options=VolumeOptions(subpath="a")),
            "must not set Subpath when using anonymous volumes",
        ),
        (
            Mount(type="volume", source="v", target="/x", volume_options=VolumeOptions(subpath="/a")),
            "subpath must be a relative path within the volume",
        ),
        (
            Mount(type="volume", source="v", target="/x", volume_options=VolumeOptions(subpath="a/../..")),
            "subpath must be a relative path within the volume",
        ),
        (
            Mount(type="volume", source="v", target="/x", volume_options=VolumeOptions(subpath="..")),
            "subpath must be a relative path within the volume",
        ),
        (
            Mount(type="volume", target="/x", read_only=True),
            "must not set ReadOnly mode when using anonymous volumes",
        ),
        (Mount(type="volume", source="v", target="/"), "invalid specification: destination can't be '/'"),
    ],
)  # fmt: skip
def test_invalid_volume_mounts(m: Mount, detail: str) -> None:
    assert _err(m) == f'invalid mount config for type "volume": {detail}'


def test_valid_volume_mounts() -> None:
    validate_mount(Mount(type="volume", target="/x"))
    validate_mount(Mount(type="volume", source="v", target="/x", read_only=True))
    for sub in ("a", "a/b", "..a", "a/../b"):
        validate_mount(
            Mount(type="volume", source="v", target="/x", volume_options=VolumeOptions(subpath=sub))
        )


@pytest.mark.parametrize(
    ("m", "detail"),
    [
        (Mount(type="tmpfs", target="/t", bind_options=BindOptions()), "field BindOptions must not be specified"),
        (Mount(type="tmpfs", source="x", target="/t"), "field Source must not be specified"),
        (Mount(type="tmpfs", target="/t", tmpfs_options=TmpfsOptions(options=[["a", "b", "c"]])),
         "invalid option array length"),
        (Mount(type="tmpfs", target="/t", tmpfs_options=TmpfsOptions(options=[[]])),
         "invalid option array length"),
        (Mount(type="tmpfs", target="/t", tmpfs_options=TmpfsOptions(options=[["suid"]])),
         "invalid option: suid"),
    ],
)  # fmt: skip
def test_invalid_tmpfs_mounts(m: Mount, detail: str) -> None:
    assert _err(m) == f'invalid mount config for type "tmpfs": {detail}'


def test_valid_tmpfs_and_image_mounts() -> None:
    validate_mount(
        Mount(
            type="tmpfs",
            target="/t",
            tmpfs_options=TmpfsOptions(size_bytes=1024, options=[["exec"], ["noexec", ""]]),
        )
    )
    validate_mount(Mount(type="image", source="busybox", target="/img"))
    assert _err(Mount(type="image", target="/img")) == (
        'invalid mount config for type "image": field Source must not be empty'
    )


@pytest.mark.parametrize("kind", ["npipe", "cluster", "", "BIND"])
def test_unknown_mount_type(kind: str) -> None:
    assert _err(Mount(type=kind, source="/tmp", target="/x")) == (
        f'invalid mount config for type "{kind}": mount type unknown'
    )


# -- mount_point ------------------------------------------------------------------------


def test_mount_point_bind() -> None:
    mp = mount_point(Mount(type="bind", source="/h/../h2/", target="/c/", read_only=True), ROOT)
    assert mp == MountPoint(
        type="bind", source="/h2", destination="/c", rw=False, propagation="rprivate"
    )
    mp = mount_point(
        Mount(type="bind", source="/h", target="/c", bind_options=BindOptions("rslave")), ROOT
    )
    assert mp.propagation == "rslave"
    assert mp.rw is True


def test_mount_point_volume() -> None:
    mp = mount_point(Mount(type="volume", source="vol", target="/d"), ROOT)
    assert mp == MountPoint(
        type="volume",
        name="vol",
        source=f"{ROOT}/volumes/vol/_data",
        destination="/d",
        driver="local",
        mode="z",
    )
    mp = mount_point(
        Mount(
            type="volume",
            source="vol",
            target="/d",
            read_only=True,
            volume_options=VolumeOptions(driver_config=VolumeDriverConfig(name="nfs")),
        ),
        ROOT,
    )
    assert (mp.driver, mp.rw) == ("nfs", False)
    anon = mount_point(Mount(type="volume", target="/d"), ROOT)
    assert re.fullmatch(r"[0-9a-f]{64}", anon.name)
    assert anon.source == f"{ROOT}/volumes/{anon.name}/_data"


def test_mount_point_tmpfs() -> None:
    mp = mount_point(Mount(type="tmpfs", target="/t/"), ROOT)
    assert mp == MountPoint(type="tmpfs", source="", destination="/t")


@pytest.mark.parametrize("name", ["..", ".x", "a/b", "a b", "-v"])
def test_volume_names_are_one_safe_path_component(name: str) -> None:
    """``-v ..:/d`` would mount <data-root>/volumes/../_data: the data root's neighbour."""
    with pytest.raises(errdefs.InvalidParameter, match="invalid characters for a local volume"):
        parse_bind(f"{name}:/d", "/var/lib/berth")
    with pytest.raises(errdefs.InvalidParameter, match="invalid characters for a local volume"):
        mount_point(Mount(type="volume", source=name, target="/d"), "/var/lib/berth")


def test_volume_name_too_short() -> None:
    with pytest.raises(errdefs.InvalidParameter, match="too short"):
        parse_bind("a:/d", "/var/lib/berth")
