"""The overlay2 graph driver, laid out as moby's.

``<home>/<id>/diff`` holds a layer's changes, ``<id>/link`` a short name
with ``<home>/l/<short>`` pointing at ``../<id>/diff``, and ``<id>/lower`` the
short names of every layer below (``l/A:l/B``), so deep stacks fit the
one-page limit of mount options.  Layers with a parent also have ``work``
(overlay's scratch) and are mounted on ``merged``.
"""

from __future__ import annotations

import base64
import ctypes
import errno
import os
import secrets
import shutil
import tempfile
import threading
from pathlib import Path

from berth import errdefs
from berth.graphdriver import mount as mnt
from berth.graphdriver._size import dir_size
from berth.utils.mountinfo import mounts_under
from berth.utils.reaper import Reaper

MAX_DEPTH = 128
LINK_DIR = "l"
_FS_NAMES = {
    0xEF53: "extfs",
    0x58465342: "xfs",
    0x9123683E: "btrfs",
    0x01021994: "tmpfs",
    0x794C7630: "overlayfs",
    0x2FC12FC1: "zfs",
    0x65735546: "fuse",
    0x6969: "nfs",
}


def _generate_link_id() -> str:
    """26 characters of base32 (moby's ``overlayutils.GenerateID``)."""
    return base64.b32encode(secrets.token_bytes(16)).decode().rstrip("=")[:26]


class _StatFS(ctypes.Structure):
    _fields_ = [
        ("f_type", ctypes.c_long),
        ("f_bsize", ctypes.c_long),
        ("f_blocks", ctypes.c_ulong),
        ("f_bfree", ctypes.c_ulong),
        ("f_bavail", ctypes.c_ulong),
        ("f_files", ctypes.c_ulong),
        ("f_ffree", ctypes.c_ulong),
        ("f_fsid", ctypes.c_int * 2),
        ("f_namelen", ctypes.c_long),
        ("f_frsize", ctypes.c_long),
        ("f_flags", ctypes.c_long),
        ("f_spare", ctypes.c_long * 4),
    ]


def backing_fs(path: Path) -> str:
    libc = ctypes.CDLL(None, use_errno=True)
    buf = _StatFS()
    if libc.statfs(str(path).encode(), ctypes.byref(buf)) != 0:
        return "unknown"
    return _FS_NAMES.get(buf.f_type & 0xFFFFFFFF, "unknown")


_PROBE_PREFIX = ".overlay-probe-"
#: the threads undoing probes (``Overlay2.cleanup`` waits for them)
_probes: list[threading.Thread] = []
_probes_lock = threading.Lock()


def supported(data_root: Path) -> bool:
    """Whether an overlay with an upper directory can be mounted under *data_root*.

    The mount is the answer; its unmount waits out the kernel's RCU grace period (50 ms
    on this VM, a tenth of berthd's start-up), so a thread of its own undoes the probe
    while berthd goes on (not a daemon thread: the interpreter waits for it at exit). A
    probe a killed berthd left is undone here, before the next one.
    """
    try:
        with open("/proc/filesystems") as f:
            if not any(line.split()[-1] == "overlay" for line in f if line.strip()):
                return False
    except OSError:
        return False
    data_root.mkdir(parents=True, exist_ok=True)
    if backing_fs(data_root) == "overlayfs":
        return False
    for stale in data_root.glob(_PROBE_PREFIX + "*"):
        _drop_probe(stale)
    probe = Path(tempfile.mkdtemp(prefix=_PROBE_PREFIX, dir=data_root))
    try:
        for d in ("lower", "upper", "work", "merged"):
            (probe / d).mkdir()
        mnt.mount(
            "overlay",
            str(probe / "merged"),
            "overlay",
            0,
            f"lowerdir={probe / 'lower'},upperdir={probe / 'upper'},workdir={probe / 'work'}",
        )
    except errdefs.System:
        shutil.rmtree(probe, ignore_errors=True)
        return False
    except BaseException:
        shutil.rmtree(probe, ignore_errors=True)
        raise
    dropper = threading.Thread(target=_drop_probe, args=(probe,), name="overlay-probe")
    with _probes_lock:
        _probes[:] = [t for t in _probes if t.is_alive()]
        _probes.append(dropper)
    dropper.start()
    return True


def _wait_for_probes() -> None:
    with _probes_lock:
        pending = list(_probes)
    for t in pending:
        t.join()


def _drop_probe(probe: Path) -> None:
    merged = str(probe / "merged")
    if mnt.is_mounted(merged):
        try:
            mnt.unmount(merged)
        except errdefs.System:
            return  # kept: a directory with a mount in it is not removed
    shutil.rmtree(probe, ignore_errors=True)


class Overlay2:
    name = "overlay2"
    whiteout_format = "overlay"

    def __init__(self, home: Path, reaper: Reaper) -> None:
        self.home = home
        self.reaper = reaper
        (home / LINK_DIR).mkdir(parents=True, exist_ok=True)
        os.chmod(home, 0o710)
        self._refs: dict[str, int] = {}
        self._lock = threading.Lock()
        self._index_off = self._supports_index_off()
        self._sweep_dangling_links()

    def _sweep_dangling_links(self) -> None:
        links = self.home / LINK_DIR
        for entry in os.scandir(links):
            if entry.is_symlink() and not os.path.exists(entry.path):
                os.unlink(entry.path)

    def _supports_index_off(self) -> bool:
        return os.path.exists("/sys/module/overlay/parameters/index")

    def _dir(self, ident: str) -> Path:
        return self.home / ident

    def exists(self, ident: str) -> bool:
        return (self._dir(ident) / "diff").is_dir()

    def list_ids(self) -> list[str]:
        return [e.name for e in os.scandir(self.home) if e.is_dir() and e.name != LINK_DIR]

    def create(self, ident: str, parent: str | None) -> None:
        d = self._dir(ident)
        d.mkdir(mode=0o710)
        try:
            (d / "diff").mkdir(mode=0o755)
            link = _generate_link_id()
            # The link file first: whoever removes this directory can then always
            # find the symlink to remove with it, even after a crash right here.
            (d / "link").write_text(link)
            os.symlink(f"../{ident}/diff", self.home / LINK_DIR / link)
            if parent is None:
                return
            (d / "work").mkdir(mode=0o700)
            parent_dir = self._dir(parent)
            (parent_dir / "committed").touch(mode=0o600)
            lowers = [f"{LINK_DIR}/{(parent_dir / 'link').read_text().strip()}"]
            parent_lower = parent_dir / "lower"
            if parent_lower.exists():
                lowers.extend(parent_lower.read_text().strip().split(":"))
            if len(lowers) > MAX_DEPTH:
                raise errdefs.InvalidParameter(
                    f"max depth exceeded: an image may have at most {MAX_DEPTH} layers"
                )
            (d / "lower").write_text(":".join(lowers))
        except BaseException:
            self.remove(ident)
            raise

    def remove(self, ident: str) -> None:
        d = self._dir(ident)
        if not d.exists():
            return
        mnt.unmount(str(d / "merged"))
        try:
            link = (d / "link").read_text().strip()
        except OSError:
            link = ""
        if link:
            try:
                os.unlink(self.home / LINK_DIR / link)
            except FileNotFoundError:
                pass
        self.reaper.discard(d)
        with self._lock:
            self._refs.pop(ident, None)

    def apply_target(self, ident: str) -> Path:
        return self._dir(ident) / "diff"

    def _lower_links(self, ident: str) -> list[str]:
        try:
            text = (self._dir(ident) / "lower").read_text().strip()
        except FileNotFoundError:
            return []
        return text.split(":") if text else []

    def lower_dirs(self, ident: str) -> list[Path]:
        out = []
        for link in self._lower_links(ident):
            target = os.readlink(self.home / link)
            out.append((self.home / LINK_DIR / target).resolve())
        return out

    def get(self, ident: str) -> Path:
        d = self._dir(ident)
        lowers = self._lower_links(ident)
        if not lowers:
            return d / "diff"
        merged = d / "merged"
        with self._lock:
            count = self._refs.get(ident, 0)
            if mnt.is_mounted(str(merged)):
                # Ours from before (a live-restored container): adopt it.
                self._refs[ident] = count + 1
                return merged
            merged.mkdir(mode=0o700, exist_ok=True)
            prefix = "index=off," if self._index_off else ""
            readonly = (d / "committed").exists()
            abs_lowers = ":".join(str(self.home / s) for s in lowers)
            if readonly:
                opts = f"{prefix}lowerdir={d / 'diff'}:{abs_lowers}"
            else:
                opts = f"{prefix}lowerdir={abs_lowers},upperdir={d / 'diff'},workdir={d / 'work'}"
            if len(opts) < mnt.PAGE_SIZE - 1:
                mnt.mount("overlay", str(merged), "overlay", 0, opts)
            else:
                rel_lowers = ":".join(lowers)
                if readonly:
                    opts = f"{prefix}lowerdir={ident}/diff:{rel_lowers}"
                else:
                    opts = (
                        f"{prefix}lowerdir={rel_lowers},upperdir={ident}/diff,workdir={ident}/work"
                    )
                if len(opts) >= mnt.PAGE_SIZE - 1:
                    raise errdefs.System(
                        f"cannot mount layer, mount options too large ({len(opts)})"
                    )
                mnt.mount_from(str(self.home), "overlay", f"{ident}/merged", "overlay", opts)
            self._refs[ident] = 1
            return merged

    def put(self, ident: str) -> None:
        with self._lock:
            count = self._refs.get(ident, 0)
            if count > 1:
                self._refs[ident] = count - 1
                return
            self._refs.pop(ident, None)
        if self._lower_links(ident):
            merged = self._dir(ident) / "merged"
            mnt.unmount(str(merged))
            try:
                merged.rmdir()
            except OSError as e:
                if e.errno not in (errno.ENOENT, errno.EBUSY, errno.ENOTEMPTY):
                    raise

    def metadata(self, ident: str) -> dict[str, str]:
        d = self._dir(ident)
        data = {
            "MergedDir": str(d / "merged"),
            "UpperDir": str(d / "diff"),
            "WorkDir": str(d / "work"),
        }
        lowers = self.lower_dirs(ident)
        if lowers:
            data["LowerDir"] = ":".join(str(p) for p in lowers)
        return data

    def status(self) -> list[list[str]]:
        return [
            ["Backing Filesystem", backing_fs(self.home)],
            ["Supports d_type", "true"],
            ["Using metacopy", "false"],
            ["Native Overlay Diff", "true"],
            ["userxattr", "false"],
        ]

    def diff_size(self, ident: str, parent: str | None = None) -> int:
        return dir_size(self._dir(ident) / "diff")

    def cleanup(self) -> None:
        """Unmount everything, the probe of the data root included."""
        _wait_for_probes()
        self.unmount_all(set())

    def unmount_all(self, except_ids: set[str]) -> None:
        """Unmount every layer mount but those of *except_ids* (live containers)."""
        keep = {str(self._dir(i) / "merged") for i in except_ids}
        for mp in mounts_under(str(self.home)):
            if mp not in keep:
                mnt.unmount(mp)
        with self._lock:
            for ident in list(self._refs):
                if ident not in except_ids:
                    del self._refs[ident]
