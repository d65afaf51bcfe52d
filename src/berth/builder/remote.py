"""A ``remote`` build context (moby's ``remotecontext.Detect`` for URLs): an http(s) URL
of a tarball, spooled while it downloads, or of a plain Dockerfile (``text/plain``),
which builds with no context.  Git URLs are refused: berth does not clone repositories.

The response's Content-Type is checked as moby's ``inspectResponse`` checks it (sniffed
from the first bytes when the server sends none or ``application/octet-stream``), and the
context is filtered by its own .dockerignore, since no client did.
"""

from __future__ import annotations

import io
import re
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from berth import errdefs
from berth.builder.context import (
    MAX_DOCKERFILE,
    BuildContext,
    dockerfile_only,
    open_context,
    read_context,
)

#: moby's ``maxPreambleLength``: what is read to sniff a content type
_PREAMBLE = 100
_CHUNK = 256 << 10
#: bytes between two "Downloading context" progress messages (moby: 512 kB)
_PROGRESS_STEP = 512 << 10

_ACCEPTABLE = re.compile(
    r"application/x-bzip2|application/bzip2|application/gzip|application/x-gzip|"
    r"application/x-xz|application/xz|application/tar|application/x-tar|"
    r"application/octet-stream|text/plain"
)
_GIT_SUFFIX = re.compile(r"\.git(?:#.+)?$")

Progress = Callable[[dict[str, Any]], None]


def is_git_url(url: str) -> bool:
    """moby's ``urlutil.IsGitURL``."""
    if is_url(url) and _GIT_SUFFIX.search(url):
        return True
    return url.startswith(("git://", "github.com/", "git@"))


def is_url(url: str) -> bool:
    return url.startswith(("http://", "https://"))


def detect_content_type(head: bytes) -> str:
    """Go's ``http.DetectContentType`` for what a build context can be: gzip, bzip2 and xz
    by their magic, text when no byte is binary, else ``application/octet-stream``."""
    if head.startswith(b"\x1f\x8b\x08"):
        return "application/x-gzip"
    if head.startswith(b"BZh"):
        return "application/x-bzip2"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "application/x-xz"
    binary = set(range(0x09)) | {0x0B} | set(range(0x0E, 0x1B)) | set(range(0x1C, 0x20))
    if any(b in binary for b in head[:512]):
        return "application/octet-stream"
    return "text/plain"


class _Download(io.RawIOBase):
    """The response body with what was read to sniff it put back in front, progress
    reported as moby's progress reader does, and a cancel that stops the next read."""

    def __init__(
        self,
        head: bytes,
        body: IO[bytes],
        url: str,
        progress: Progress | None,
        cancel: threading.Event,
    ) -> None:
        super().__init__()
        self._head = head
        self._body = body
        self._url = url
        self._progress = progress
        self._cancel = cancel
        self.current = 0
        self._reported = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if self._cancel.is_set():
            raise errdefs.Unavailable("build cancelled: the client went away")
        if self._head:
            n = min(len(b), len(self._head))
            b[:n] = self._head[:n]
            self._head = self._head[n:]
        else:
            data = self._body.read(min(len(b), _CHUNK))
            n = len(data)
            b[:n] = data
        self.current += n
        if self._progress is not None and (
            n == 0 or self.current - self._reported > _PROGRESS_STEP
        ):
            self._reported = self.current
            self._progress(
                {
                    "status": self._url,
                    "progressDetail": {"current": self.current},
                    "id": "Downloading context",
                }
            )
        return n


def _open(url: str) -> Any:
    """moby's ``GetWithStatusError``: an HTTP error status is the client's problem, worded
    as dockerd words it."""
    try:
        return urllib.request.urlopen(url, timeout=60)
    except urllib.error.HTTPError as e:
        body = e.read().strip().decode("utf-8", "replace")
        msg = f"failed to GET {url} with status {e.code} {e.reason}: {body}"
        if e.code == 404:
            raise errdefs.NotFound(msg) from None
        if e.code == 401:
            raise errdefs.Unauthorized(msg) from None
        if e.code == 403:
            raise errdefs.Forbidden(msg) from None
        raise errdefs.InvalidParameter(msg) from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise errdefs.InvalidParameter(
            f"error downloading remote context {url}: {reason}"
        ) from None


def fetch_remote(
    url: str,
    tmp_dir: Path,
    dockerfile_name: str,
    progress: Progress | None,
    cancel: threading.Event,
) -> BuildContext:
    """The context *url* names (see the module docstring)."""
    if url == "client-session":
        raise errdefs.InvalidParameter(
            "experimental session with v1 builder is no longer supported, use builder "
            "version v2 (BuildKit) instead"
        )
    if is_git_url(url):
        raise errdefs.NotImplementedFeature(
            f"git build contexts are not supported by this daemon: {url}: clone the "
            "repository and build from its directory"
        )
    if not is_url(url):
        raise errdefs.InvalidParameter(f"remoteURL ({url}) could not be recognized as URL")
    resp = _open(url)
    with resp:
        head = resp.read(_PREAMBLE)
        if not head:
            raise errdefs.InvalidParameter(
                f"error detecting content type for remote {url}: empty response"
            )
        declared = resp.headers.get("Content-Type", "") or ""
        ctype = declared.split(";", 1)[0].strip().lower()
        if not ctype or ctype == "application/octet-stream":
            ctype = detect_content_type(head)
        found = _ACCEPTABLE.search(ctype)
        if found is None:
            raise errdefs.InvalidParameter(
                f"error detecting content type for remote {url}: unsupported Content-Type "
                f'"{declared}"'
            )
        body = _Download(head, resp, url, progress, cancel)
        if found.group(0) == "text/plain":
            data = body.read(MAX_DOCKERFILE + 1)
            if len(data) > MAX_DOCKERFILE:
                raise errdefs.InvalidParameter(
                    f"the Dockerfile at {url} is larger than {MAX_DOCKERFILE >> 20} MiB"
                )
            return dockerfile_only(data)
        fs = read_context(io.BufferedReader(body, _CHUNK), tmp_dir)
    return open_context(fs, dockerfile_name, apply_dockerignore=True)
