"""Tars in and out, and paths inside an untrusted root (moby's ``pkg/archive`` and ``pkg/symlink``).

Everything that reads or writes a client's tar or walks a layer's or a
container's files goes through here: the layer store (:func:`apply_layer`),
``docker cp`` (:class:`ContainerFS`, :func:`unpack`), ``load``/``import``
(:func:`decompress`), push and save (the tar-split record of a layer:
:class:`TarSplitRecorder`, :func:`assemble_tar_split`), commit, diff, export and
build (:func:`export_changes`, :class:`WriterPipe`).  The modules are private; this is
the surface.
"""

from berth.archive._changes import Change, dir_changes, export_changes, overlay_changes
from berth.archive._compress import DigestReader, decompress, detect_compression
from berth.archive._errors import InvalidLayer, Wording, tar_errors
from berth.archive._fs import ContainerFS, Dir, Entry, Mount, Resolved
from berth.archive._gopath import (
    GO_MODE_CHAR_DEVICE,
    GO_MODE_DEVICE,
    GO_MODE_DIR,
    GO_MODE_NAMED_PIPE,
    GO_MODE_SETGID,
    GO_MODE_SETUID,
    GO_MODE_SOCKET,
    GO_MODE_STICKY,
    GO_MODE_SYMLINK,
    container_abs_path,
    go_base,
    go_file_mode,
    go_join,
    go_split,
    preserve_trailing_dot_or_separator,
)
from berth.archive._pack import TarWriter, pack, tar_header
from berth.archive._pipe import PIPE_SIZE, WriterPipe
from berth.archive._tarread import TarStream, read_member
from berth.archive._tarread import padding as tar_padding
from berth.archive._tarsplit import (
    TarSplitRecorder,
    assemble_tar_split,
    pack_layer_diff,
    tar_split_size,
)
from berth.archive._unpack import (
    OPAQUE_XATTR,
    WHITEOUT_META_PREFIX,
    WHITEOUT_OPAQUE,
    WHITEOUT_PREFIX,
    apply_layer,
    clean_member_name,
    digest_stream,
    unpack,
)
from berth.utils.gostr import go_clean, go_quote
from berth.utils.symlink import MAX_SYMLINKS, Link, follow_in_root, resolve_in_root

__all__ = [
    "GO_MODE_CHAR_DEVICE",
    "GO_MODE_DEVICE",
    "GO_MODE_DIR",
    "GO_MODE_NAMED_PIPE",
    "GO_MODE_SETGID",
    "GO_MODE_SETUID",
    "GO_MODE_SOCKET",
    "GO_MODE_STICKY",
    "GO_MODE_SYMLINK",
    "MAX_SYMLINKS",
    "OPAQUE_XATTR",
    "PIPE_SIZE",
    "WHITEOUT_META_PREFIX",
    "WHITEOUT_OPAQUE",
    "WHITEOUT_PREFIX",
    "Change",
    "ContainerFS",
    "DigestReader",
    "Dir",
    "Entry",
    "InvalidLayer",
    "Link",
    "Mount",
    "Resolved",
    "TarSplitRecorder",
    "TarStream",
    "TarWriter",
    "Wording",
    "WriterPipe",
    "apply_layer",
    "assemble_tar_split",
    "clean_member_name",
    "container_abs_path",
    "decompress",
    "detect_compression",
    "digest_stream",
    "dir_changes",
    "export_changes",
    "follow_in_root",
    "go_base",
    "go_clean",
    "go_file_mode",
    "go_join",
    "go_quote",
    "go_split",
    "overlay_changes",
    "pack",
    "pack_layer_diff",
    "preserve_trailing_dot_or_separator",
    "read_member",
    "resolve_in_root",
    "tar_errors",
    "tar_header",
    "tar_padding",
    "tar_split_size",
    "unpack",
]
