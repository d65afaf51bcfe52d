"""Volumes as objects: the store behind ``/volumes`` and the local driver.

Each volume is a directory ``<root>/<name>`` holding ``_data`` (what containers mount) and
``metadata.json`` (its record), laid out as dockerd lays out ``/var/lib/docker/volumes``.
A volume appears and disappears by one rename, so a crash leaves either a whole volume or
none; the leftovers (``.tmp-*`` of a create, ``.trash-*`` of a remove) are swept at load.

Who uses a volume is not stored here: the daemon answers it from the container records
(``users``), so a reference survives a restart or a SIGKILL without a second bookkeeping
that could disagree.  Only the mounts of option volumes (``-o type=tmpfs``...) are counted
in memory; after a restart the daemon mounts again for each running container and an
already mounted ``_data`` is adopted, not mounted twice.
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import shutil
import socket
import stat
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path

import msgspec

from berth import errdefs
from berth.events import Events
from berth.utils import syscalls
from berth.utils.atomic import write_file
from berth.utils.mountinfo import mounts_under
from berth.utils.timefmt import format_rfc3339_nano
from berth.volume.mounts import validate_volume_name

__all__ = ["ANONYMOUS_LABEL", "LOCAL", "VolumeRecord", "VolumeStore"]

log = logging.getLogger(__name__)

#: The label dockerd 23+ puts on anonymous volumes; ``volume prune`` without ``-a`` keys on it.
ANONYMOUS_LABEL = "com.docker.volume.anonymous"
LOCAL = "local"

DATA = "_data"
METADATA = "metadata.json"
_TMP = ".tmp-"
_TRASH = ".trash-"

#: moby's local driver on Linux: ``validOpts`` and ``mandatoryOpts`` (checked in this order,
#: where Go's map order would make the message vary)
_VALID_OPTS = ("type", "device", "o")
_REQUIRED_OPTS = (("device", ("type",)), ("type", ("device",)), ("o", ("device", "type")))


class VolumeRecord(msgspec.Struct, omit_defaults=True):
    """A volume as persisted, one file per volume."""

    name: str
    driver: str = LOCAL
    created: str = ""
    labels: dict[str, str] = {}
    options: dict[str, str] = {}


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(VolumeRecord)


# -- mount(2) options, as moby/sys/mount parses them (the call is berth.utils.syscalls) --

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_SYNCHRONOUS = 0x10
MS_REMOUNT = 0x20
MS_MANDLOCK = 0x40
MS_DIRSYNC = 0x80
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_REC = 0x4000
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
MNT_DETACH = syscalls.MNT_DETACH
_PROPAGATION = MS_SHARED | MS_PRIVATE | MS_SLAVE | MS_UNBINDABLE

#: moby/sys/mount's ``parseOptions``: option -> (clear instead of set, flag); anything else
#: goes to the filesystem as data
_FLAGS: dict[str, tuple[bool, int]] = {
    "defaults": (False, 0),
    "ro": (False, MS_RDONLY),
    "rw": (True, MS_RDONLY),
    "suid": (True, MS_NOSUID),
    "nosuid": (False, MS_NOSUID),
    "dev": (True, MS_NODEV),
    "nodev": (False, MS_NODEV),
    "exec": (True, MS_NOEXEC),
    "noexec": (False, MS_NOEXEC),
    "sync": (False, MS_SYNCHRONOUS),
    "async": (True, MS_SYNCHRONOUS),
    "dirsync": (False, MS_DIRSYNC),
    "remount": (False, MS_REMOUNT),
    "mand": (False, MS_MANDLOCK),
    "nomand": (True, MS_MANDLOCK),
    "atime": (True, MS_NOATIME),
    "noatime": (False, MS_NOATIME),
    "diratime": (True, MS_NODIRATIME),
    "nodiratime": (False, MS_NODIRATIME),
    "bind": (False, MS_BIND),
    "rbind": (False, MS_BIND | MS_REC),
    "unbindable": (False, MS_UNBINDABLE),
    "runbindable": (False, MS_UNBINDABLE | MS_REC),
    "private": (False, MS_PRIVATE),
    "rprivate": (False, MS_PRIVATE | MS_REC),
    "shared": (False, MS_SHARED),
    "rshared": (False, MS_SHARED | MS_REC),
    "slave": (False, MS_SLAVE),
    "rslave": (False, MS_SLAVE | MS_REC),
    "relatime": (False, MS_RELATIME),
    "norelatime": (True, MS_RELATIME),
    "strictatime": (False, MS_STRICTATIME),
    "nostrictatime": (True, MS_STRICTATIME),
}


def _parse_mount_options(o: str) -> tuple[int, str]:
    flags = 0
    data: list[str] = []
    for opt in o.split(","):
        if not opt:
            continue
        if opt in _FLAGS:
            clear, flag = _FLAGS[opt]
            flags = flags & ~flag if clear else flags | flag
        else:
            data.append(opt)
    return flags, ",".join(data)


def _mount_call(source: str, target: str, fstype: str, flags: int, data: str) -> None:
    try:
        syscalls.mount(source, target, fstype, flags, data)
    except OSError as e:
        err = e.errno or 0
        # moby/sys/mount's mountError, with Go's lower-case errno text
        msg = f"mount {source}:{target}" if source else f"mount {target}"
        if flags:
            msg += f", flags: {flags:#x}"
        if data:
            msg += f", data: {data}"
        reason = os.strerror(err)
        raise OSError(err, f"{msg}: {reason[:1].lower()}{reason[1:]}") from None


def _mount(device: str, target: str, fstype: str, o: str) -> None:
    """moby/sys/mount's ``Mount``: propagation flags need a call of their own, and a
    read-only bind a remount (the kernel ignores MS_RDONLY on the first bind call)."""
    flags, data = _parse_mount_options(o)
    if not flags & MS_REMOUNT or data:
        _mount_call(device, target, fstype, flags & ~_PROPAGATION, data)
    if flags & _PROPAGATION:
        _mount_call("", target, "", flags & (_PROPAGATION | MS_REC), "")
    if flags & (MS_BIND | MS_RDONLY) == MS_BIND | MS_RDONLY:
        _mount_call("", target, "", (flags & ~_PROPAGATION) | MS_REMOUNT, "")


def _umount(target: str) -> None:
    """Detach *target*; lazily, so nothing below it is reachable by the path afterwards."""
    try:
        syscalls.umount2(target, MNT_DETACH)  # not a mount point, or gone: fine
    except OSError as e:
        raise OSError(e.errno, f"unmount {target}: {e.strerror}") from None


def _mask_password(msg: str, o: str) -> str:
    """moby hides a cifs ``password=`` in mount errors."""
    for opt in o.split(","):
        if opt.startswith("password=") and len(opt) > len("password="):
            msg = msg.replace(opt, "password=********")
    return msg


def _resolve_addr(fstype: str, o: str) -> str:
    """moby resolves an nfs/cifs ``addr=`` host name: the kernel takes only an address."""
    if fstype not in ("nfs", "cifs"):
        return o
    out = []
    for opt in o.split(","):
        if not opt.startswith("addr="):
            out.append(opt)
            continue
        host = opt[len("addr=") :]
        try:
            socket.inet_pton(socket.AF_INET, host)
        except OSError:
            try:
                host = str(socket.getaddrinfo(host, None)[0][4][0])
            except OSError as e:
                raise errdefs.System(
                    f"error resolving passed in network volume address: {e}"
                ) from None
        out.append("addr=" + host)
    return ",".join(out)


def _fsync_dir(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _needs_mount(rec: VolumeRecord) -> bool:
    return bool(rec.options.get("type") or rec.options.get("device"))


class VolumeStore:
    """The volumes under ``<data-root>/volumes``; thread-safe, one lock per volume name so a
    slow copy-up or removal of one volume never holds up the others."""

    def __init__(self, root: Path, *, events: Events, users: Callable[[str], list[str]]) -> None:
        self._root = Path(root)
        self._root_str = str(self._root)
        self._events = events
        self._users = users
        self._records: dict[str, VolumeRecord] = {}
        #: name -> ref -> count of mount() calls not yet undone
        self._refs: dict[str, Counter[str]] = {}
        #: option volumes whose _data carries their mount
        self._mounted: set[str] = set()
        self._lock = threading.Lock()  # guards the dicts above and _name_locks
        self._name_locks: dict[str, threading.Lock] = {}
        self._root.mkdir(mode=0o701, parents=True, exist_ok=True)
        self._load()

    @property
    def events(self) -> Events:
        """The bus the store publishes on, for the service's own volume events (prune)."""
        return self._events

    # -- loading ----------------------------------------------------------------------------

    def _load(self) -> None:
        mounted = set(mounts_under(str(self._root)))
        for entry in sorted(os.scandir(self._root), key=lambda e: e.name):
            name = entry.name
            if name.startswith((_TMP, _TRASH)):
                self._purge(entry.path)
                continue
            if name.startswith(".") or not entry.is_dir(follow_symlinks=False):
                continue
            try:
                validate_volume_name(name)
            except errdefs.InvalidParameter:
                log.warning("volumes: ignoring %s: not a volume name", entry.path)
                continue
            rec = self._load_one(name, Path(entry.path))
            if rec is None:
                continue
            self._records[name] = rec
            if _needs_mount(rec) and os.path.join(entry.path, DATA) in mounted:
                self._mounted.add(name)

    def _load_one(self, name: str, vdir: Path) -> VolumeRecord | None:
        meta = vdir / METADATA
        try:
            rec = _decoder.decode(meta.read_bytes())
        except FileNotFoundError:
            pass
        except (OSError, msgspec.DecodeError) as e:
            log.warning("volumes: %s unreadable (%s); taking %s as a plain volume", meta, e, name)
        else:
            if rec.name != name:
                rec.name = name
            return rec
        data = vdir / DATA
        if not data.is_dir() or data.is_symlink():
            log.warning("volumes: ignoring %s: neither metadata nor %s", vdir, DATA)
            return None
        # Made by berth before volumes had records (or by hand): adopt it as a local volume.
        rec = VolumeRecord(name=name, created=format_rfc3339_nano(vdir.stat().st_mtime_ns))
        write_file(meta, _encoder.encode(rec))
        return rec

    # -- helpers ----------------------------------------------------------------------------

    def _name_lock(self, name: str) -> threading.Lock:
        with self._lock:
            lock = self._name_locks.get(name)
            if lock is None:
                lock = self._name_locks[name] = threading.Lock()
            return lock

    def _record(self, name: str) -> VolumeRecord:
        with self._lock:
            rec = self._records.get(name)
        if rec is None:
            raise errdefs.NotFound(f"get {name}: no such volume")
        return rec

    def _data(self, name: str) -> str:
        return f"{self._root_str}/{name}/{DATA}"

    def _purge(self, path: str) -> bool:
        """Delete a tree that is no longer a volume: unmount what is mounted in it first,
        and delete nothing if a mount stays (its files are not the volume's)."""
        for mp in mounts_under(path):
            try:
                _umount(mp)
            except OSError as e:
                log.warning("volumes: %s", e)
        left = mounts_under(path)
        if left:
            log.warning("volumes: not deleting %s: still mounted: %s", path, ", ".join(left))
            return False
        if os.path.islink(path) or not os.path.isdir(path):
            try:
                os.unlink(path)
            except OSError as e:
                log.warning("volumes: %s", e)
                return False
            return True
        errors: list[str] = []

        def onerror(_fn: object, p: str, exc: object) -> None:
            errors.append(f"{p}: {exc}")

        # rmtree works by descriptors without following symlinks: a link to a host
        # directory inside _data loses the link, never the directory's content.
        shutil.rmtree(path, onerror=onerror)
        if errors:
            log.warning("volumes: deleting %s: %s", path, "; ".join(errors[:5]))
        return not errors

    # -- the API ----------------------------------------------------------------------------

    def create(
        self,
        name: str = "",
        *,
        driver: str = LOCAL,
        labels: Mapping[str, str] | None = None,
        options: Mapping[str, str] | None = None,
        anonymous: bool = False,
    ) -> VolumeRecord:
        """dockerd's create: idempotent on an existing name (whatever its labels and options,
        as dockerd returns the stored volume), a new one appears whole or not at all."""
        name = name or secrets.token_hex(32)
        driver = driver or LOCAL
        try:
            validate_volume_name(name)
        except errdefs.InvalidParameter as e:
            raise errdefs.InvalidParameter(f"create {name}: {e}") from None
        with self._name_lock(name):
            with self._lock:
                existing = self._records.get(name)
            if driver != LOCAL:
                raise errdefs.NotFound(
                    f"create {name}: error looking up volume plugin {driver}: "
                    f'plugin "{driver}" not found'
                )
            if existing is not None:
                if existing.driver != driver:
                    raise errdefs.Conflict(
                        f"create {name}: driver '{existing.driver}' already has volume "
                        f"'{name}': volume name must be unique"
                    )
                return existing
            opts = dict(options or {})
            self._validate_options(name, opts)
            lbls = dict(labels or {})
            if anonymous:
                lbls[ANONYMOUS_LABEL] = ""
            rec = VolumeRecord(
                name=name,
                driver=driver,
                created=format_rfc3339_nano(time.time_ns()),
                labels=lbls,
                options=opts,
            )
            self._write_new(rec)
            with self._lock:
                self._records[name] = rec
        self._events.publish("volume", "create", name, {"driver": driver})
        return rec

    @staticmethod
    def _validate_options(name: str, opts: Mapping[str, str]) -> None:
        for key in sorted(opts):
            if key not in _VALID_OPTS:
                raise errdefs.InvalidParameter(f'create {name}: invalid option: "{key}"')
        for key, required in _REQUIRED_OPTS:
            if key in opts:
                for req in required:
                    if req not in opts:
                        raise errdefs.InvalidParameter(
                            f'create {name}: missing required option: "{req}"'
                        )

    def _write_new(self, rec: VolumeRecord) -> None:
        target = self._root / rec.name
        tmp = Path(tempfile.mkdtemp(dir=self._root, prefix=f"{_TMP}{rec.name[:200]}-"))
        try:
            os.chmod(tmp, 0o755)
            os.mkdir(tmp / DATA)
            os.chmod(tmp / DATA, 0o755)  # not the umask's: containers of any user traverse it
            with open(tmp / METADATA, "wb") as f:
                f.write(_encoder.encode(rec))
                f.flush()
                os.fsync(f.fileno())
            _fsync_dir(tmp)
            # rename(2) replaces an empty directory but never a non-empty one
            os.rename(tmp, target)
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            if e.errno in (errno.ENOTEMPTY, errno.EEXIST):
                raise errdefs.Conflict(
                    f"create {rec.name}: volume already exists under {target}"
                ) from None
            raise errdefs.System(f"create {rec.name}: {e}") from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _fsync_dir(self._root)

    def get(self, name: str) -> VolumeRecord:
        return self._record(name)

    def list(self) -> list[VolumeRecord]:
        with self._lock:
            return [self._records[n] for n in sorted(self._records)]

    def path(self, name: str) -> str:
        """The Mountpoint: what containers bind-mount (with an option volume's mount on it)."""
        self._record(name)
        return self._data(name)

    def remove(self, name: str, *, force: bool = False) -> None:
        """Refuse while a container (running or stopped) references the volume; otherwise
        unmount, rename out of sight, and delete.  *force* forgets a volume whose mount
        cannot be undone (as dockerd's purge on error); it never removes one in use."""
        with self._name_lock(name):
            rec = self._record(name)
            users = list(self._users(name))
            with self._lock:
                users += [r for r in self._refs.get(name, ()) if r not in users]
            if users:
                raise errdefs.Conflict(f"remove {name}: volume is in use - [{', '.join(users)}]")
            vdir = str(self._root / name)
            failure = ""
            for mp in mounts_under(vdir):
                try:
                    _umount(mp)
                except OSError as e:
                    failure = str(e)
            left = mounts_under(vdir)
            if left and not force:
                raise errdefs.System(
                    f"remove {name}: {failure or 'still mounted: ' + ', '.join(left)}"
                )
            trash = str(self._root / f"{_TRASH}{name[:200]}-{secrets.token_hex(4)}")
            try:
                os.rename(vdir, trash)
            except FileNotFoundError:
                trash = ""
            except OSError as e:
                if not force:
                    raise errdefs.System(f"remove {name}: {e}") from None
                log.warning("volumes: forgetting %s, left on disk: %s", name, e)
                trash = ""
            with self._lock:
                self._records.pop(name, None)
                self._refs.pop(name, None)
                self._mounted.discard(name)
            if trash:
                _fsync_dir(self._root)
        self._events.publish("volume", "destroy", name, {"driver": rec.driver})
        if trash:
            # Out of the lock: the name is free again, and a crash here leaves only trash.
            self._purge(trash)

    def mount(self, name: str, ref: str) -> str:
        """*ref* (a container ID) starts using the volume.  The first user of an option
        volume mounts its device on ``_data``, unless it is still mounted from before."""
        with self._name_lock(name):
            rec = self._record(name)
            if rec.driver != LOCAL:
                raise errdefs.NotFound(
                    f'error looking up volume plugin {rec.driver}: plugin "{rec.driver}" not found'
                )
            data = self._data(name)
            with self._lock:
                need = _needs_mount(rec) and name not in self._mounted
            if need:
                if data not in mounts_under(data):  # else mounted by an earlier berthd: adopt
                    self._mount_device(rec, data)
                with self._lock:
                    self._mounted.add(name)
            with self._lock:
                self._refs.setdefault(name, Counter())[ref] += 1
            return data

    @staticmethod
    def _mount_device(rec: VolumeRecord, data: str) -> None:
        device = rec.options.get("device", "")
        fstype = rec.options.get("type", "")
        o = rec.options.get("o", "")
        if not device:
            raise errdefs.System("missing device in volume options")
        try:
            _mount(device, data, fstype, _resolve_addr(fstype, o))
        except OSError as e:
            # dockerd's words; the volume exists, the host refused its mount
            raise errdefs.System(
                f"failed to mount local volume: {_mask_password(str(e.strerror), o)}"
            ) from None

    def unmount(self, name: str, ref: str) -> None:
        """*ref* stops using the volume; the last user of an option volume unmounts it.
        Unknown names and refs are ignored: a forced removal may have forgotten them."""
        with self._name_lock(name):
            with self._lock:
                refs = self._refs.get(name)
                if refs is None or refs[ref] <= 0:
                    return
                refs[ref] -= 1
                if refs[ref] <= 0:
                    del refs[ref]
                if refs:
                    return
                del self._refs[name]
                if name not in self._mounted:
                    return
            data = self._data(name)
            try:
                _umount(data)
            except OSError as e:
                if data in mounts_under(data):
                    raise errdefs.System(str(e.strerror)) from None
            with self._lock:
                self._mounted.discard(name)

    def copy_up(self, name: str, source: str) -> bool:
        """dockerd's copy of the image's content under a mount point into a new, empty
        volume, keeping owners, modes, times, xattrs, hard links and symlinks (as links:
        ``cp -a`` never dereferences, so nothing outside *source* is read)."""
        with self._name_lock(name):
            self._record(name)
            data = self._data(name)
            try:
                st = os.lstat(source)
            except FileNotFoundError:
                return False
            if not stat.S_ISDIR(st.st_mode):
                return False
            with os.scandir(data) as it:
                if next(it, None) is not None:
                    return False
            with os.scandir(source) as it:
                if next(it, None) is None:
                    return False
            proc = subprocess.run(
                ["cp", "-a", "--", os.path.join(source, "."), data + "/"],
                capture_output=True,
                text=True,
                check=False,
            )
            if proc.returncode != 0:
                raise errdefs.System(f"copy-up into volume {name}: {proc.stderr.strip()}")
            return True

    def size(self, name: str) -> int:
        """Bytes in the volume as dockerd's ``directory.Size`` counts them: apparent sizes
        of everything but directories, each inode once, no symlink followed; -1 unknown."""
        try:
            data = self.path(name)
        except errdefs.NotFound:
            return -1
        total = 0
        seen: set[int] = set()
        stack = [data]
        try:
            while stack:
                with os.scandir(stack.pop()) as it:
                    for e in it:
                        st = e.stat(follow_symlinks=False)
                        if stat.S_ISDIR(st.st_mode):
                            stack.append(e.path)
                        elif st.st_size and st.st_ino not in seen:
                            seen.add(st.st_ino)
                            total += st.st_size
        except OSError:
            return -1
        return total
