"""What a container changed in its filesystem: ``docker diff``, and the layer ``docker commit``
makes of it (moby's ``pkg/archive/changes.go``).

dockerd compares the container's RW layer with the layer below it (the init layer over the
image) by walking both trees (``ChangesDirs``, used by overlay2 too): a name is modified when
its type, mode, owner or device, or (not for directories) its size or mtime, or its file
capability differ; a directory is also listed, as modified, when something below it changed.
The same answer is computed here from what the graph driver keeps:

* overlay (:func:`overlay_changes`): only the upper directory is walked, i.e. what the
  container wrote, not the whole image.  Each name there is looked up in the lower layers
  as overlayfs merges them (their whiteouts and opaque directories honoured): absent below
  is an addition; present, it is compared as above, so a file copied up but left as it was
  is no change; a 0/0 character device is a deletion of what was below; an opaque directory
  hides what was below it, each such name a deletion.
* whole-copy layers (vfs, :func:`dir_changes`): both trees are walked in step, a name on one
  side only being an addition or a deletion; a name with the same inode on both sides is the
  same file and not looked into (moby's walker prunes these too).

Order: dockerd's comes from Go map iteration (it differs from call to call) but always lists
a directory before what is below it and, within a directory, deletions after the rest; here
the names of a directory are taken in byte order under those same rules, so the listing is
one dockerd could give and the same every time.

Everything is opened relative to a directory descriptor with ``O_NOFOLLOW`` and stat'ed
without following: a symlink in a layer is never followed, on either side.  A name the
container removes during the walk is skipped, as moby's walk and tar writer skip it.
"""

from __future__ import annotations

import errno
import logging
import os
import posixpath
import stat
import tarfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from berth.archive._pack import XATTR_PREFIX, TarWriter, capability, hardlinked, tar_header
from berth.archive._unpack import OPAQUE_XATTR, WHITEOUT_OPAQUE, WHITEOUT_PREFIX

log = logging.getLogger(__name__)

#: moby's ``archive.ChangeType`` values (the Engine API's ``Kind``)
MODIFY = 0
ADD = 1
DELETE = 2
_LETTER = {MODIFY: "C", ADD: "A", DELETE: "D"}

_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_O_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_CAPABILITY = "security.capability"
#: what a name that vanished or changed kind mid-walk raises; such a name is skipped
_GONE = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP)


@dataclass(frozen=True, slots=True)
class Change:
    """One line of ``docker diff``: *path* in the container, *kind* MODIFY/ADD/DELETE.

    The layer tar needs two more facts: a directory that is *opaque* (overlay: nothing of
    what was below it shows through, so the tar marks it with ``.wh..wh..opq``), and a
    deletion *implied* by such a directory (no ``.wh.`` entry of its own).
    """

    path: str
    kind: int
    opaque: bool = False
    implied: bool = False

    def __str__(self) -> str:
        return f"{_LETTER[self.kind]} {self.path}"


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _is_opaque(dir_fd: int) -> bool:
    try:
        return os.getxattr(dir_fd, OPAQUE_XATTR) == b"y"
    except OSError:
        return False


def _capability_at(dir_fd: int, name: str) -> bytes | None:
    # No *at form of getxattr: the /proc path pins the directory, the name is not followed.
    try:
        return os.getxattr(f"/proc/self/fd/{dir_fd}/{name}", _CAPABILITY, follow_symlinks=False)
    except OSError:
        return None


def _same_time(a: int, b: int) -> bool:
    """moby's ``sameFsTimeSpec``: equal seconds and nanoseconds, unless one side has none
    (a copy that kept whole seconds only)."""
    sec_a, ns_a = divmod(a, 1_000_000_000)
    sec_b, ns_b = divmod(b, 1_000_000_000)
    return sec_a == sec_b and (ns_a in (ns_b, 0) or ns_b == 0)


def stat_different(old: os.stat_result, new: os.stat_result) -> bool:
    """moby's ``statDifferent``.  Size and mtime are not looked at for a mode with the
    S_IFDIR bit, which Go's test also finds in sockets and block devices."""
    if (old.st_mode, old.st_uid, old.st_gid, old.st_rdev) != (
        new.st_mode,
        new.st_uid,
        new.st_gid,
        new.st_rdev,
    ):
        return True
    if old.st_mode & stat.S_IFDIR == stat.S_IFDIR:
        return False
    return old.st_size != new.st_size or not _same_time(old.st_mtime_ns, new.st_mtime_ns)


def _close_all(fds: Iterable[int]) -> None:
    for fd in fds:
        os.close(fd)


@dataclass(frozen=True, slots=True)
class _Found:
    """A name of the tree below: its stat, the descriptor of the directory holding the
    entry that shows, and (a directory) the directories of that name to merge, top first."""

    st: os.stat_result
    holder: int
    dirs: tuple[int, ...]


class _Below:
    """The tree the RW layer is compared with, looked at one directory at a time.

    A directory of it is the tuple of descriptors of that directory in each layer that
    merges into it, top first: overlay's lower layers (a whiteout hides the name in the
    layers under it, a non-directory or an opaque directory ends the merge), or the one
    directory of a whole copy.
    """

    def __init__(self, roots: Sequence[str], *, overlay: bool) -> None:
        self.overlay = overlay
        fds: list[int] = []
        try:
            for root in roots:
                fds.append(os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
        except BaseException:
            _close_all(fds)
            raise
        self.root = tuple(fds)

    def close(self) -> None:
        _close_all(self.root)
        self.root = ()

    def lookup(self, dirs: tuple[int, ...], name: str, *, open_dirs: bool) -> _Found | None:
        """*name* in the directory *dirs*; its own directories opened if *open_dirs* (the
        caller closes them)."""
        top: os.stat_result | None = None
        holder = -1
        below: list[int] = []
        try:
            for fd in dirs:
                try:
                    st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if self.overlay and _is_whiteout(st):
                    break  # hides the name in every layer under this one
                if top is None:
                    top, holder = st, fd
                    if not stat.S_ISDIR(st.st_mode) or not open_dirs:
                        break
                elif not stat.S_ISDIR(st.st_mode):
                    break  # overlayfs stops merging at a non-directory
                sub = os.open(name, _O_DIR, dir_fd=fd)
                below.append(sub)
                if self.overlay and _is_opaque(sub):
                    break
        except BaseException:
            _close_all(below)
            raise
        if top is None:
            return None
        return _Found(top, holder, tuple(below))

    def names(self, dirs: tuple[int, ...]) -> set[str]:
        """The names the directory *dirs* shows."""
        shown: set[str] = set()
        hidden: set[str] = set()
        for fd in dirs:
            with os.scandir(fd) as it:
                for entry in it:
                    name = entry.name
                    if name in shown or name in hidden:
                        continue
                    if self.overlay and not (
                        entry.is_dir(follow_symlinks=False)
                        or entry.is_file(follow_symlinks=False)
                        or entry.is_symlink()
                    ):
                        try:
                            if _is_whiteout(entry.stat(follow_symlinks=False)):
                                hidden.add(name)
                                continue
                        except FileNotFoundError:
                            continue
                    shown.add(name)
        return shown


@dataclass(eq=False)
class _Frame:
    """A directory of the RW layer being walked."""

    fd: int
    path: str  # "" for the root, else "/a/b"
    names: Iterator[str]
    below: tuple[int, ...]  # the same directory in the tree below; () when there is none
    added: bool  # new with everything in it: no lookups
    complete: bool  # lists all its names (whole copy, or opaque): missing ones are deleted
    slot: int  # index in the output of this directory's own line, -1 once it is written
    opaque: bool = False
    present: set[str] = field(default_factory=set)
    deleted: list[tuple[str, bool]] = field(default_factory=list)  # (name, implied)


def _sorted_names(fd: int) -> Iterator[str]:
    return iter(sorted(os.listdir(fd), key=os.fsencode))


class _Walker:
    def __init__(self, below: _Below) -> None:
        self.below = below
        self.overlay = below.overlay
        self.out: list[Change | None] = []
        self.stack: list[_Frame] = []

    def run(self, root: str, *, complete: bool) -> list[Change]:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            names = _sorted_names(fd)
        except BaseException:
            os.close(fd)
            raise
        self.stack.append(_Frame(fd, "", names, self.below.root, False, complete, -1))
        try:
            while self.stack:
                frame = self.stack[-1]
                name = next(frame.names, None)
                if name is None:
                    self._finish(self.stack.pop())
                else:
                    self._visit(frame, name)
        finally:
            for frame in self.stack:
                self._close(frame)
            self.stack.clear()
        out = [c for c in self.out if c is not None]
        assert len(out) == len(self.out)
        return out

    def _open(self, parent: _Frame, name: str) -> int | None:
        """Directory *name* of *parent* opened, or None when it is gone (or no directory
        any more)."""
        try:
            return os.open(name, _O_DIR, dir_fd=parent.fd)
        except OSError as e:
            if e.errno in _GONE:
                return None
            raise

    def _push(
        self,
        parent: _Frame,
        name: str,
        fd: int,
        below: tuple[int, ...],
        *,
        added: bool,
        complete: bool = False,
        slot: int = -1,
        opaque: bool = False,
    ) -> None:
        """Descend into the directory *name*, open as *fd* (owned from here on)."""
        try:
            names = _sorted_names(fd)
        except BaseException:
            os.close(fd)
            _close_all(below)
            raise
        path = f"{parent.path}/{name}"
        self.stack.append(_Frame(fd, path, names, below, added, complete, slot, opaque))

    def _visit(self, frame: _Frame, name: str) -> None:
        path = f"{frame.path}/{name}"
        try:
            st = os.stat(name, dir_fd=frame.fd, follow_symlinks=False)
        except FileNotFoundError:
            return
        is_dir = stat.S_ISDIR(st.st_mode)
        if frame.added:
            if self.overlay and _is_whiteout(st):
                return  # overlayfs shows nothing there
            self.out.append(Change(path, ADD))
            if is_dir and (fd := self._open(frame, name)) is not None:
                self._push(frame, name, fd, (), added=True)
            return
        if self.overlay and _is_whiteout(st):
            if self.below.lookup(frame.below, name, open_dirs=False) is not None:
                frame.deleted.append((name, False))
            return
        frame.present.add(name)
        found = self.below.lookup(frame.below, name, open_dirs=is_dir)
        if found is None:
            self.out.append(Change(path, ADD))
            if is_dir and (fd := self._open(frame, name)) is not None:
                self._push(frame, name, fd, (), added=True)
            return
        old = found.st
        if (old.st_dev, old.st_ino) == (st.st_dev, st.st_ino):
            _close_all(found.dirs)  # the very same file
            return
        changed = stat_different(old, st) or (
            stat.S_ISREG(st.st_mode)
            and _capability_at(found.holder, name) != _capability_at(frame.fd, name)
        )
        if not is_dir:
            _close_all(found.dirs)
            if changed:
                self.out.append(Change(path, MODIFY))
            return
        try:
            fd = self._open(frame, name)
        except BaseException:
            _close_all(found.dirs)
            raise
        if fd is None:
            _close_all(found.dirs)
            if changed:
                self.out.append(Change(path, MODIFY))
            return
        was_dir = stat.S_ISDIR(old.st_mode)
        opaque = self.overlay and was_dir and _is_opaque(fd)
        complete = was_dir and (opaque or not self.overlay)
        slot = -1
        if changed:
            self.out.append(Change(path, MODIFY, opaque=opaque))
        else:
            slot = len(self.out)
            self.out.append(None)  # its line, kept if something below it changes
        below = found.dirs if was_dir else ()
        self._push(frame, name, fd, below, added=False, complete=complete, slot=slot, opaque=opaque)

    def _finish(self, frame: _Frame) -> None:
        try:
            if frame.complete and frame.below:
                gone = self.below.names(frame.below) - frame.present
                gone -= {name for name, _ in frame.deleted}
                implied = self.overlay  # an opaque directory says these are gone
                frame.deleted.extend((name, implied) for name in gone)
            frame.deleted.sort(key=lambda d: os.fsencode(d[0]))
            for name, implied in frame.deleted:
                self.out.append(Change(f"{frame.path}/{name}", DELETE, implied=implied))
        finally:
            self._close(frame)
        if frame.slot >= 0:
            if len(self.out) > frame.slot + 1:
                self.out[frame.slot] = Change(frame.path, MODIFY, opaque=frame.opaque)
            else:
                self.out.pop()

    @staticmethod
    def _close(frame: _Frame) -> None:
        os.close(frame.fd)
        if frame.path:  # the root's are the _Below's own
            _close_all(frame.below)
        frame.below = ()


def overlay_changes(upper: str, lowers: Sequence[str]) -> list[Change]:
    """The changes of an overlay layer whose own directory is *upper*, over the layers
    *lowers* (top first): for a container, its init layer and then the image's."""
    below = _Below(lowers, overlay=True)
    try:
        return _Walker(below).run(upper, complete=False)
    finally:
        below.close()


def dir_changes(new: str, old: str | None) -> list[Change]:
    """The changes of the whole tree *new* over the whole tree *old* (None: an empty one),
    moby's ``ChangesDirs``."""
    below = _Below([old] if old is not None else [], overlay=False)
    try:
        return _Walker(below).run(new, complete=old is not None)
    finally:
        below.close()


# -- the layer tar ---------------------------------------------------------------------------


class _Parents:
    """Opens the directories of a tree by their path, never following a symlink; keeps
    the last one (the changes come sorted, so neighbours share it)."""

    def __init__(self, root: str) -> None:
        self._root = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._path = ""
        self._fd = self._root

    def get(self, rel: str) -> int:
        if rel == self._path:
            return self._fd
        self._drop()
        fd = self._root
        for part in rel.split("/") if rel else ():
            try:
                sub = os.open(part, _O_DIR, dir_fd=fd)
            finally:
                if fd != self._root:
                    os.close(fd)
            fd = sub
        self._fd, self._path = fd, rel
        return fd

    def _drop(self) -> None:
        if self._fd != self._root:
            os.close(self._fd)
        self._fd, self._path = self._root, ""

    def close(self) -> None:
        self._drop()
        os.close(self._root)


def _marker(name: str, mode: int, uid: int, gid: int, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.REGTYPE
    info.mode = mode
    info.uid, info.gid = uid, gid
    info.uname = info.gname = ""
    info.mtime = mtime
    return info


def export_changes(root: str, changes: Iterable[Change], out: int) -> None:
    """Write the layer tar of *changes* to descriptor *out*, the contents read from *root*
    (the layer's own directory, where every added or modified name lies), as moby's
    ``ExportChanges``: entries sorted by path, a deletion as a ``.wh.<name>`` file, and an
    opaque directory followed by ``.wh..wh..opq``.  A name gone meanwhile is skipped;
    BrokenPipeError means the reader went away.
    """
    writer = TarWriter(out)
    seen: dict[tuple[int, int], str] = {}
    parents = _Parents(root)
    now = int(time.time())
    try:
        for change in sorted(changes, key=lambda c: os.fsencode(c.path)):
            rel = change.path.lstrip("/")
            parent, base = posixpath.split(rel)
            if change.kind == DELETE:
                if not change.implied:
                    whiteout = posixpath.join(parent, WHITEOUT_PREFIX + base)
                    writer.add(_marker(whiteout, 0o600, 0, 0, now))
                continue
            try:
                dir_fd = parents.get(parent)
                _emit(dir_fd, base, rel, change.opaque, writer, seen)
            except BrokenPipeError:
                raise
            except OSError as e:
                if e.errno not in _GONE:
                    raise
                log.debug("changes: skipping %s: %s", change.path, e)
        writer.finish()
    finally:
        parents.close()


def _emit(
    dir_fd: int,
    name: str,
    rel: str,
    opaque: bool,
    writer: TarWriter,
    seen: dict[tuple[int, int], str],
) -> None:
    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    kind = stat.S_IFMT(st.st_mode)
    if kind == stat.S_IFDIR:
        writer.add(tar_header(rel + "/", st))
        if opaque:
            marker = posixpath.join(rel, WHITEOUT_OPAQUE)
            writer.add(_marker(marker, st.st_mode & 0o777, st.st_uid, st.st_gid, 0))
        return
    if kind == stat.S_IFSOCK:
        return  # Go's tar cannot write sockets; dockerd leaves them out
    if kind != stat.S_IFREG:
        info = tar_header(rel, st)
        if kind == stat.S_IFLNK:
            info.linkname = os.readlink(name, dir_fd=dir_fd)
        hardlinked(info, st, seen)
        writer.add(info)
        return
    fd = os.open(name, _O_FILE, dir_fd=dir_fd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return  # replaced meanwhile
        info = tar_header(rel, st)
        if hardlinked(info, st, seen):
            writer.add(info)
            return
        cap = capability(fd)
        if cap is not None:
            info.pax_headers = {XATTR_PREFIX + _CAPABILITY: cap}
        writer.add(info)
        writer.data(fd, st.st_size, rel)
    finally:
        os.close(fd)


__all__ = [
    "ADD",
    "DELETE",
    "MODIFY",
    "Change",
    "dir_changes",
    "export_changes",
    "overlay_changes",
    "stat_different",
]
