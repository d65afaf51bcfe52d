""".dockerignore: its patterns (moby's ``dockerignore.ReadAll``) and their matching
(moby's ``patternmatcher``: ``*`` and ``?`` stay inside one path element, ``**`` crosses
them, ``!`` re-includes, and a pattern that matches a directory matches what is below it).

The CLI applies the file to a local context before it sends it; the daemon needs it for a
``remote`` context, which nobody filtered, and to drop the Dockerfile and .dockerignore
from any context when the file names them.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from berth import errdefs
from berth.utils.gostr import go_clean
from berth.utils.pathmatch import path_match

_BOM = "\ufeff"


def read_patterns(data: bytes) -> list[str]:
    """The patterns of a .dockerignore file, as moby's ``ReadAll`` cleans them: comments
    and blank lines dropped, paths cleaned and made relative, ``!`` kept in front."""
    out: list[str] = []
    text = data.decode("utf-8", "surrogateescape")
    for n, raw in enumerate(text.splitlines()):
        line = raw.removeprefix(_BOM) if n == 0 else raw
        if line.startswith("#"):
            continue
        pattern = line.strip()
        if not pattern:
            continue
        invert = pattern.startswith("!")
        if invert:
            pattern = pattern[1:].strip()
        if pattern:
            pattern = go_clean(pattern)
            if len(pattern) > 1 and pattern.startswith("/"):
                pattern = pattern[1:]
        out.append("!" + pattern if invert else pattern)
    return out


@dataclass(frozen=True)
class _Pattern:
    regex: re.Pattern[str]
    dirs: int
    exclusion: bool


@functools.lru_cache(maxsize=256)
def _compile(pattern: str) -> re.Pattern[str]:
    """patternmatcher's translation of one cleaned pattern to a regular expression."""
    out = ["^"]
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        i += 1
        if ch == "*":
            if i < n and pattern[i] == "*":
                i += 1
                if i < n and pattern[i] == "/":
                    i += 1
                out.append(".*" if i >= n else "(.*/)?")
            else:
                out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch in ".$":
            out.append("\\" + ch)
        elif ch == "\\":
            if i < n:
                out.append(re.escape(pattern[i]))
                i += 1
            else:
                out.append("\\\\")
        elif ch in "+()|{}^":
            out.append("\\" + ch)
        else:
            out.append(ch)
    out.append("$")
    try:
        return re.compile("".join(out), re.DOTALL)
    except re.error as e:
        raise errdefs.InvalidParameter(f"invalid .dockerignore pattern {pattern!r}: {e}") from None


class PatternMatcher:
    """moby's ``PatternMatcher`` over cleaned patterns; the last matching one decides."""

    def __init__(self, patterns: list[str]) -> None:
        self._patterns: list[_Pattern] = []
        self.exclusions = False
        for raw in patterns:
            p = raw.strip()
            if not p:
                continue
            p = go_clean(p)
            exclusion = p.startswith("!")
            if exclusion:
                if len(p) == 1:
                    raise errdefs.InvalidParameter('illegal exclusion pattern: "!"')
                p = p[1:]
                self.exclusions = True
            try:
                path_match(p, ".")  # Go's filepath.Match checks the syntax
            except errdefs.InvalidParameter:
                raise errdefs.InvalidParameter(
                    f"syntax error in pattern in .dockerignore: {p}"
                ) from None
            self._patterns.append(_Pattern(_compile(p), len(p.split("/")), exclusion))

    def matches(self, path: str) -> bool:
        """Whether *path* (relative, ``/``-separated) is excluded."""
        matched = False
        parent = path.rpartition("/")[0] or "."
        parent_dirs = parent.split("/")
        for pat in self._patterns:
            if pat.exclusion != matched:
                continue
            hit = pat.regex.match(path) is not None
            if not hit and parent != "." and pat.dirs <= len(parent_dirs):
                hit = pat.regex.match("/".join(parent_dirs[: pat.dirs])) is not None
            if hit:
                matched = not pat.exclusion
        return matched
