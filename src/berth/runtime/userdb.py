"""Users and groups as the container sees them: its own ``/etc/passwd`` and ``/etc/group``.

The rules are those of runc's ``libcontainer/user`` (now ``moby/sys/user``)
that dockerd uses to fill ``process.user`` of the OCI spec:

* ``""`` is uid 0; ``"name"`` or ``"uid"``, optionally ``":group"`` or ``":gid"``.
* A numeric uid or gid need not exist in the files; a name must.
* In the implicit form (no ``:group``) the user's supplementary groups are
  the groups of ``/etc/group`` that list the user's name as a member.
* ``--group-add`` entries are group names or numbers, appended after those.

The root filesystem belongs to the image, so nothing in it is trusted: the
paths are resolved with symlinks confined to the root, every component is
then opened without following symlinks (a swap after resolution fails rather
than escapes), only a regular file is read, and only up to a size limit.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from berth import errdefs
from berth.utils.symlink import resolve_in_root as secure_join

PASSWD_PATH = "etc/passwd"
GROUP_PATH = "etc/group"
MAX_DB_SIZE = 4 << 20  # far beyond any real passwd/group file
MIN_ID = 0
MAX_ID = (1 << 31) - 1

ERR_NO_PASSWD_ENTRIES = "no matching entries in passwd file"
ERR_NO_GROUP_ENTRIES = "no matching entries in group file"
ERR_RANGE = f"uids and gids must be in range {MIN_ID}-{MAX_ID}"

_GO_INT = re.compile(r"[+-]?[0-9]+")
_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1


@dataclass(frozen=True)
class ResolvedUser:
    """Who the container's process runs as.

    ``additional_gids`` is the spec's ``additionalGids`` as dockerd fills it:
    the primary ``gid`` first, then the supplementary groups from
    ``/etc/group`` membership, then ``--group-add`` (duplicates kept).
    """

    uid: int
    gid: int
    additional_gids: tuple[int, ...] = ()
    home: str = "/"


@dataclass(frozen=True)
class PasswdEntry:
    name: str
    uid: int
    gid: int
    home: str


@dataclass(frozen=True)
class GroupEntry:
    name: str
    gid: int
    members: tuple[str, ...]


def go_atoi(text: str) -> int | None:
    """``strconv.Atoi``: optional sign and decimal digits, int64 range; None otherwise."""
    if not _GO_INT.fullmatch(text):
        return None
    value = int(text)
    if value < _INT64_MIN or value > _INT64_MAX:
        return None
    return value


def _lenient_int(text: str) -> int:
    # The files' own numbers: conversion errors count as 0, as in runc's parser.
    value = go_atoi(text)
    return 0 if value is None else value


def _lines(data: bytes) -> Iterable[list[str]]:
    for raw in data.split(b"\n"):
        line = raw.strip()
        if line:
            yield line.decode("utf-8", "surrogateescape").split(":")


def parse_passwd(data: bytes) -> list[PasswdEntry]:
    """``name:password:uid:gid:gecos:home:shell`` lines; short lines leave fields empty."""
    out = []
    for fields in _lines(data):
        f = fields + [""] * (7 - len(fields))
        out.append(PasswdEntry(f[0], _lenient_int(f[2]), _lenient_int(f[3]), f[5]))
    return out


def parse_group(data: bytes) -> list[GroupEntry]:
    """``name:password:gid:member,member`` lines."""
    out = []
    for fields in _lines(data):
        f = fields + [""] * (4 - len(fields))
        members = tuple(f[3].split(",")) if f[3] else ()
        out.append(GroupEntry(f[0], _lenient_int(f[2]), members))
    return out


def read_rootfs_file(rootfs: str | os.PathLike[str], rel: str) -> bytes | None:
    """The bytes of *rel* inside *rootfs*, or None when it is missing or not a regular file.

    Symlinks resolve as if *rootfs* were ``/``; the resolved path is then
    opened one component at a time with ``O_NOFOLLOW`` from a descriptor of
    the root, so a symlink planted after resolution cannot lead outside.
    """
    root = os.fspath(rootfs)
    resolved = secure_join(root, rel)
    parts = [p for p in os.path.relpath(resolved, root).split("/") if p not in ("", ".")]
    if not parts:
        return None  # the name resolves to the root directory itself
    dir_flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    file_flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for part in parts[:-1]:
                nxt = os.open(part, dir_flags, dir_fd=fd)
                os.close(fd)
                fd = nxt
            ffd = os.open(parts[-1], file_flags, dir_fd=fd)
        finally:
            os.close(fd)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
            return None
        raise errdefs.System(f"reading /{rel} in the container: {e.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(ffd).st_mode):
            return None
        chunks = []
        size = 0
        while size <= MAX_DB_SIZE:
            chunk = os.read(ffd, MAX_DB_SIZE + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(ffd)
    if size > MAX_DB_SIZE:
        raise errdefs.InvalidParameter(
            f"/{rel} in the container is larger than {MAX_DB_SIZE} bytes"
        )
    return b"".join(chunks)


def _check_range(value: int) -> int:
    if value < MIN_ID or value > MAX_ID:
        raise errdefs.InvalidParameter(ERR_RANGE)
    return value


class _Files:
    """The two databases, each read at most once and only when needed."""

    def __init__(self, rootfs: str | os.PathLike[str]) -> None:
        self.rootfs = rootfs
        self._passwd: list[PasswdEntry] | None = None
        self._group: list[GroupEntry] | None = None
        self._passwd_read = False
        self._group_read = False

    def passwd(self) -> list[PasswdEntry] | None:
        if not self._passwd_read:
            data = read_rootfs_file(self.rootfs, PASSWD_PATH)
            self._passwd = None if data is None else parse_passwd(data)
            self._passwd_read = True
        return self._passwd

    def group(self) -> list[GroupEntry] | None:
        if not self._group_read:
            data = read_rootfs_file(self.rootfs, GROUP_PATH)
            self._group = None if data is None else parse_group(data)
            self._group_read = True
        return self._group


def _filter_groups(
    groups: list[GroupEntry] | None, pred: Callable[[GroupEntry], bool]
) -> list[GroupEntry]:
    return [g for g in groups or [] if pred(g)]


def additional_groups(files: _Files, wanted: list[str]) -> list[int]:
    """``--group-add``: names or numbers, in order, each group once."""
    groups = files.group() or []
    out: list[int] = []
    for ag in wanted:
        match = next((g for g in groups if g.name == ag or str(g.gid) == ag), None)
        if match is not None:
            gid = match.gid
        else:
            num = go_atoi(ag)
            if num is None:
                raise errdefs.InvalidParameter(f"Unable to find group {ag}: {ERR_NO_GROUP_ENTRIES}")
            gid = _check_range(num)
        if gid not in out:
            out.append(gid)
    return out


def resolve_user(
    rootfs: str | os.PathLike[str], user: str, group_add: list[str] | None = None
) -> ResolvedUser:
    """Docker's user resolution in the container's ``/etc/passwd`` and ``/etc/group``.

    Raises InvalidParameter with runc's messages ("unable to find user NAME:
    no matching entries in passwd file", the same for groups, or the id range).
    """
    files = _Files(rootfs)
    fields = user.split(":")
    user_arg = fields[0]
    group_arg = fields[1] if len(fields) > 1 else ""
    uid_num = go_atoi(user_arg)
    gid_num = go_atoi(group_arg)

    uid, gid, home = 0, 0, "/"
    passwd = files.passwd()
    if user_arg == "":
        users = [u for u in passwd or [] if u.uid == 0]
    elif uid_num is not None:
        users = [u for u in passwd or [] if u.uid == uid_num]
    else:
        users = [u for u in passwd or [] if u.name == user_arg]
    matched_name = ""
    if users:
        first = users[0]  # the first match wins, even if more entries match
        matched_name = first.name
        uid, gid, home = first.uid, first.gid, first.home or "/"
    elif user_arg != "":
        if uid_num is None:
            raise errdefs.InvalidParameter(
                f"unable to find user {user_arg}: {ERR_NO_PASSWD_ENTRIES}"
            )
        uid = _check_range(uid_num)

    sgids: list[int] = []
    if group_arg != "":
        if gid_num is not None:
            found = _filter_groups(files.group(), lambda g: g.gid == gid_num)
        else:
            found = _filter_groups(files.group(), lambda g: g.name == group_arg)
        if found:
            gid = found[0].gid
        elif gid_num is None:
            raise errdefs.InvalidParameter(
                f"unable to find group {group_arg}: {ERR_NO_GROUP_ENTRIES}"
            )
        else:
            gid = _check_range(gid_num)
    elif matched_name:
        # Supplementary groups only in the implicit form: every group listing the user.
        found = _filter_groups(files.group(), lambda g: matched_name in g.members)
        sgids = [g.gid for g in found]

    extra = additional_groups(files, group_add) if group_add else []
    return ResolvedUser(uid=uid, gid=gid, additional_gids=(gid, *sgids, *extra), home=home)
