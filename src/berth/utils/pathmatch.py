"""Go's ``path.Match``: shell patterns where ``*`` never crosses ``/``."""

from __future__ import annotations

import functools
import re

from berth import errdefs


def _class_char(ch: str) -> str:
    return "\\" + ch if ch in "\\^]-[" else ch


@functools.lru_cache(maxsize=256)
def _compile(pattern: str) -> re.Pattern[str]:
    out = []
    i = 0
    n = len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "\\":
            i += 1
            if i >= n:
                raise errdefs.InvalidParameter("syntax error in pattern")
            out.append(re.escape(pattern[i]))
        elif c == "[":
            j = i + 1
            negate = j < n and pattern[j] == "^"
            if negate:
                j += 1
            cls = []
            first = True
            while j < n and (pattern[j] != "]" or first):
                first = False
                ch = pattern[j]
                if ch == "\\":
                    j += 1
                    if j >= n:
                        raise errdefs.InvalidParameter("syntax error in pattern")
                    ch = pattern[j]
                if j + 2 < n and pattern[j + 1] == "-" and pattern[j + 2] != "]":
                    j += 2
                    hi = pattern[j]
                    # Go matches nothing for a reversed range; re would refuse it.
                    if ch <= hi:
                        cls.append(_class_char(ch) + "-" + _class_char(hi))
                else:
                    cls.append(_class_char(ch))
                j += 1
            if j >= n:
                raise errdefs.InvalidParameter("syntax error in pattern")
            if cls:
                out.append("[" + ("^" if negate else "") + "".join(cls) + "]")
            else:
                out.append("." if negate else "(?!)")
            i = j
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("^" + "".join(out) + "$", re.DOTALL)


def path_match(pattern: str, name: str) -> bool:
    return bool(_compile(pattern).match(name))
