"""Go's ``path/filepath`` and ``os.FileMode``, whose exact results ``docker cp`` relies on."""

from __future__ import annotations

import stat

from berth.utils.gostr import go_clean

# Go's os.FileMode type and mode bits.
GO_MODE_DIR = 1 << 31
GO_MODE_SYMLINK = 1 << 27
GO_MODE_DEVICE = 1 << 26
GO_MODE_NAMED_PIPE = 1 << 25
GO_MODE_SOCKET = 1 << 24
GO_MODE_SETUID = 1 << 23
GO_MODE_SETGID = 1 << 22
GO_MODE_CHAR_DEVICE = 1 << 21
GO_MODE_STICKY = 1 << 20


def go_file_mode(st_mode: int) -> int:
    """``os.FileMode`` of a Unix ``st_mode``, as Go's ``os.Lstat`` builds it."""
    mode = st_mode & 0o777
    kind = stat.S_IFMT(st_mode)
    if kind == stat.S_IFBLK:
        mode |= GO_MODE_DEVICE
    elif kind == stat.S_IFCHR:
        mode |= GO_MODE_DEVICE | GO_MODE_CHAR_DEVICE
    elif kind == stat.S_IFDIR:
        mode |= GO_MODE_DIR
    elif kind == stat.S_IFIFO:
        mode |= GO_MODE_NAMED_PIPE
    elif kind == stat.S_IFLNK:
        mode |= GO_MODE_SYMLINK
    elif kind == stat.S_IFSOCK:
        mode |= GO_MODE_SOCKET
    if st_mode & stat.S_ISUID:
        mode |= GO_MODE_SETUID
    if st_mode & stat.S_ISGID:
        mode |= GO_MODE_SETGID
    if st_mode & stat.S_ISVTX:
        mode |= GO_MODE_STICKY
    return mode


def go_join(*parts: str) -> str:
    """``filepath.Join``: empty parts are dropped and an absolute part does not reset."""
    kept = [p for p in parts if p]
    return go_clean("/".join(kept)) if kept else ""


def go_base(path: str) -> str:
    """``filepath.Base``: the last element, trailing slashes ignored; ``/`` for the root."""
    if not path:
        return "."
    stripped = path.rstrip("/")
    if not stripped:
        return "/"
    return stripped.rsplit("/", 1)[-1]


def go_split(path: str) -> tuple[str, str]:
    """``filepath.Split``: everything up to and including the last slash, and the rest."""
    i = path.rfind("/")
    return path[: i + 1], path[i + 1 :]


def preserve_trailing_dot_or_separator(cleaned: str, original: str) -> str:
    """moby's ``archive.PreserveTrailingDotOrSeparator``: ``/x/`` and ``/x/.`` keep their tail."""
    if go_base(cleaned) != "." and go_base(original) == ".":
        if not cleaned.endswith("/"):
            cleaned += "/"
        cleaned += "."
    if not cleaned.endswith("/") and original.endswith("/"):
        cleaned += "/"
    return cleaned


def container_abs_path(path: str) -> str:
    """The path as an absolute container path, with a trailing ``/`` or ``/.`` kept."""
    return preserve_trailing_dot_or_separator(go_join("/", path) or "/", path)
