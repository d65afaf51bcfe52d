"""Dockerfile text to a syntax tree: buildkit's ``frontend/dockerfile/parser``.

This is the first of the classic builder's two parsing passes (the second,
:mod:`berth.builder.instructions`, turns the nodes into typed instructions).  It
follows the parser the reference dockerd (20.10) runs, quirk for quirk:

* parser directives (``# escape=``, ``# syntax=``) only before anything else, each at
  most once; ``syntax`` is recorded and otherwise ignored;
* comments, line continuations with the escape token (a continuation line that is a
  comment is skipped, an empty one is skipped with a warning), a UTF-8 BOM on the
  first line, lines of at most 65535 bytes;
* heredocs are not part of this parser: ``RUN <<EOF`` is a shell-form ``RUN`` and
  the lines after it are instructions of their own, as on the reference;
* one parse function per instruction (``parseMaybeJSON``, ``parseNameVal``, ...),
  builder flags (``--from=...``) split off first, unknown instructions kept for the
  second pass to reject.

Errors are :class:`ParseError` with the parser's own message; the builder shows it
as ``failed to parse Dockerfile: <message>``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from berth.builder.shell_lex import go_is_space, go_trim_space
from berth.errdefs import InvalidParameter
from berth.utils.gostr import go_quote

DEFAULT_ESCAPE_TOKEN = "\\"
#: bufio.Scanner's MaxScanTokenSize less the newline: the longest line accepted.
MAX_LINE_BYTES = 64 * 1024 - 1

_UTF8_BOM = b"\xef\xbb\xbf"
#: Go's ``\s`` in RE2 is ASCII only and has no \v.
_DIRECTIVE = re.compile(
    r"^#[\t\n\f\r ]*([a-zA-Z][a-zA-Z0-9]*)[\t\n\f\r ]*=[\t\n\f\r ]*(.+?)[\t\n\f\r ]*\Z"
)
_WHITESPACE = re.compile(r"[\t\v\f\r ]+")
_VALID_DIRECTIVES = frozenset({"escape", "syntax"})


class ParseError(InvalidParameter):
    """The Dockerfile's text could not be parsed; lines are 1-based where known."""

    def __init__(self, message: str, start_line: int = 0, end_line: int = 0) -> None:
        super().__init__(message)
        self.start_line = start_line
        self.end_line = end_line


class _NotStringArray(Exception):
    pass


_NOT_STRING_ARRAY = "when using JSON array syntax, arrays must be comprised of strings only"


@dataclass
class Node:
    """One node of buildkit's tree: an instruction (a child of the root) or an argument.

    ``value`` is the lower-cased instruction on an instruction node, ``next`` chains
    its arguments, ``children`` holds ONBUILD's sub-instruction (and the root's
    instructions), ``attributes`` has ``json`` for exec form, ``original`` is the
    whole logical line, ``flags`` the builder flags as written.
    """

    value: str = ""
    next: Node | None = None
    children: list[Node] = field(default_factory=list)
    attributes: dict[str, bool] = field(default_factory=dict)
    original: str = ""
    flags: list[str] = field(default_factory=list)
    start_line: int = 0
    end_line: int = 0

    def add_child(self, child: Node, start_line: int, end_line: int) -> None:
        child.start_line = start_line
        child.end_line = end_line
        if self.start_line < 0:
            self.start_line = start_line
        self.end_line = end_line
        self.children.append(child)

    def args(self) -> Iterator[Node]:
        """The argument nodes after this one."""
        node = self.next
        while node is not None:
            yield node
            node = node.next

    def dump(self) -> str:
        """The S-expression dump buildkit's parser tests compare against ``result`` files."""
        out = self.value
        if self.flags:
            out += " [" + " ".join(go_quote(f) for f in self.flags) + "]"
        for child in self.children:
            out += "(" + child.dump() + ")\n"
        for arg in self.args():
            out += " " + (arg.dump() if arg.children else go_quote(arg.value))
        return go_trim_space(out)


@dataclass
class ParseResult:
    """The tree, the escape token in force, the directives seen and the warnings to print."""

    ast: Node
    escape_token: str = DEFAULT_ESCAPE_TOKEN
    directives: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def print_warnings(self) -> str:
        """The warnings as dockerd writes them to the build's stderr (empty if none)."""
        return "\n".join(self.warnings) + "\n" if self.warnings else ""


class _Directives:
    """Parser directives at the top of the file, and the escape token they set."""

    def __init__(self) -> None:
        self.escape_token = DEFAULT_ESCAPE_TOKEN
        self.continuation = _continuation_regex(DEFAULT_ESCAPE_TOKEN)
        self.done = False
        self.seen: dict[str, str] = {}

    def set_escape_token(self, token: str) -> None:
        if token not in ("`", "\\"):
            raise ParseError(f"invalid escape token '{token}' does not match ` or \\")
        self.escape_token = token
        self.continuation = _continuation_regex(token)

    def possible_parser_directive(self, line: str) -> None:
        """Record ``# key=value`` while no instruction or other comment came before."""
        if self.done:
            return
        m = _DIRECTIVE.match(line)
        if m is None:
            self.done = True
            return
        key = m.group(1).lower()
        if key not in _VALID_DIRECTIVES:
            self.done = True
            return
        if key in self.seen:
            raise ParseError(f"only one {key} parser directive can be used")
        self.seen[key] = m.group(2)
        if key == "escape":
            self.set_escape_token(m.group(2))


def _continuation_regex(token: str) -> re.Pattern[str]:
    # the escape token last on the line (trailing blanks allowed) continues it, unless
    # the token is itself escaped; a line holding only the token continues too
    t = re.escape(token)
    return re.compile(f"([^{t}]){t}[ \\t]*\\Z|^{t}[ \\t]*\\Z")


def _lines(data: bytes) -> Iterator[bytes]:
    """``bufio.Scanner`` with ``ScanLines``: lines without ``\\n`` and a final ``\\r``.

    Stops with :class:`_TooLong` at a line longer than the scanner's buffer, as Go's
    scanner does: lines read before it stay parsed.
    """
    start = 0
    n = len(data)
    while start < n:
        nl = data.find(b"\n", start)
        stop = n if nl < 0 else nl
        if stop - start > MAX_LINE_BYTES:
            raise _TooLong
        line = data[start:stop]
        if line.endswith(b"\r"):
            line = line[:-1]
        yield line
        start = stop + 1


class _TooLong(Exception):
    pass


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _trim_left_space(line: str) -> str:
    i = 0
    while i < len(line) and go_is_space(line[i]):
        i += 1
    return line[i:]


def _is_comment(line: str) -> bool:
    return _trim_left_space(line).startswith("#")


def _process_line(d: _Directives, token: str, strip_left: bool) -> str:
    if strip_left:
        token = _trim_left_space(token)
    d.possible_parser_directive(token)
    return "" if _is_comment(token) else token


def _trim_continuation(line: str, d: _Directives) -> tuple[str, bool]:
    """The line without a trailing continuation token, and whether the instruction ends."""
    if d.continuation.search(line):
        return d.continuation.sub(lambda m: m.group(1) or "", line, count=1), False
    return line, True


def parse(data: bytes | str) -> ParseResult:
    """Parse a Dockerfile's bytes into a tree of instruction nodes.

    Raises :class:`ParseError` with buildkit's message (``file with no instructions``,
    ``dockerfile line greater than max allowed size of 65535``, a line parser's error).
    """
    raw = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data
    d = _Directives()
    root = Node(start_line=-1)
    warnings: list[str] = []
    current = 0
    scanner = _lines(raw)
    too_long = False

    def scan() -> bytes | None:
        nonlocal too_long
        if too_long:
            return None
        try:
            return next(scanner)
        except StopIteration:
            return None
        except _TooLong:
            too_long = True
            return None

    while (chunk := scan()) is not None:
        if current == 0 and chunk.startswith(_UTF8_BOM):
            chunk = chunk[len(_UTF8_BOM) :]
        try:
            line = _process_line(d, _decode(chunk), True)
        except ParseError as exc:
            raise ParseError(exc.message, current, 0) from None
        current += 1
        start = current
        line, end_of_line = _trim_continuation(line, d)
        if end_of_line and line == "":
            continue

        empty_continuation = False
        while not end_of_line and (chunk := scan()) is not None:
            text = _decode(chunk)
            try:
                cont = _process_line(d, text, False)
            except ParseError as exc:
                raise ParseError(exc.message, current, 0) from None
            current += 1
            if _is_comment(text):
                continue  # a comment inside a continued instruction is dropped
            if _trim_left_space(cont) == "":
                empty_continuation = True
                continue
            cont, end_of_line = _trim_continuation(cont, d)
            line += cont

        if empty_continuation:
            warnings.append("[WARNING]: Empty continuation line found in:\n    " + line)

        try:
            child = _node_from_line(line, d)
        except ParseError as exc:
            raise ParseError(exc.message, start, current) from None
        root.add_child(child, start, current)

    if warnings:
        warnings.append(
            "[WARNING]: Empty continuation lines will become errors in a future release."
        )
    if root.start_line < 0:
        raise ParseError("file with no instructions", current, 0)
    if too_long:
        raise ParseError(
            f"dockerfile line greater than max allowed size of {MAX_LINE_BYTES}", current, 0
        )
    return ParseResult(root, d.escape_token, dict(d.seen), warnings)


# -- splitting an instruction line ---------------------------------------------------------


def _latin1(text: str) -> str:
    """Go's byte-wise view of a string: each UTF-8 byte as the code point of that value."""
    return text.encode("utf-8", "surrogateescape").decode("latin-1")


def _from_latin1(text: str) -> str:
    return text.encode("latin-1").decode("utf-8", "surrogateescape")


def split_command(line: str) -> tuple[str, list[str], str]:
    """An instruction line as (lower-cased instruction, builder flags, arguments)."""
    parts = _WHITESPACE.split(go_trim_space(line), maxsplit=1)
    cmd = parts[0].lower()
    args = ""
    flags: list[str] = []
    if len(parts) == 2:
        args, flags = _extract_builder_flags(parts[1])
    return cmd, flags, go_trim_space(args)


def _extract_builder_flags(text: str) -> tuple[str, list[str]]:
    """Leading ``--flag[=value]`` words (quotes and ``\\`` honoured) and the rest of the line.

    Go walks the line byte by byte here; so does this (through a Latin-1 view), so a
    multi-byte character in a flag comes out as Go makes it.
    """
    line = _latin1(text)
    in_spaces, in_word, in_quote = 0, 1, 2
    words: list[str] = []
    phase = in_spaces
    word = ""
    quote = ""
    blank_ok = False
    ch = ""
    n = len(line)
    pos = 0
    while pos <= n:
        if pos != n:
            ch = line[pos]
        if phase == in_spaces:
            if pos == n:
                break
            if go_is_space(ch):
                pos += 1
                continue
            if ch != "-" or pos + 1 == n or line[pos + 1] != "-":
                return _from_latin1(line[pos:]), [_from_latin1(w) for w in words]
            phase = in_word
        if phase in (in_word, in_quote) and pos == n:
            if word != "--" and (blank_ok or word):
                words.append(word)
            break
        if phase == in_word:
            if go_is_space(ch):
                phase = in_spaces
                if word == "--":
                    return _from_latin1(line[pos:]), [_from_latin1(w) for w in words]
                if blank_ok or word:
                    words.append(word)
                word = ""
                blank_ok = False
                pos += 1
                continue
            if ch in ("'", '"'):
                quote = ch
                blank_ok = True
                phase = in_quote
                pos += 1
                continue
            if ch == "\\":
                if pos + 1 == n:
                    pos += 1
                    continue  # a backslash at the end is dropped
                pos += 1
                ch = line[pos]
            word += ch
            pos += 1
            continue
        if phase == in_quote:
            if ch == quote:
                phase = in_word
                pos += 1
                continue
            if ch == "\\":
                if pos + 1 == n:
                    phase = in_word
                    pos += 1
                    continue
                pos += 1
                ch = line[pos]
            word += ch
        pos += 1
    return "", [_from_latin1(w) for w in words]


# -- the per-instruction line parsers ------------------------------------------------------

_LineParser = Callable[[str, _Directives], tuple[Node | None, dict[str, bool]]]


def _chain(values: list[str]) -> Node | None:
    head: Node | None = None
    prev: Node | None = None
    for value in values:
        node = Node(value=value)
        if prev is None:
            head = node
        else:
            prev.next = node
        prev = node
    return head


def parse_ignore(rest: str, d: _Directives) -> tuple[Node | None, dict[str, bool]]:
    """An unknown instruction keeps no arguments; the second pass rejects it."""
    return Node(), {}


def parse_sub_command(rest: str, d: _Directives) -> tuple[Node | None, dict[str, bool]]:
    """ONBUILD's argument: a whole instruction as a child node."""
    if rest == "":
        return None, {}
    return Node(children=[_node_from_line(rest, d)]), {}


def parse_words(rest: str, d: _Directives) -> list[str]:
    """Words split on whitespace outside quotes; quotes and escapes are kept for later."""
    in_spaces, in_word, in_quote = 0, 1, 2
    words: list[str] = []
    phase = in_spaces
    word: list[str] = []
    quote = ""
    blank_ok = False
    n = len(rest)
    pos = 0
    ch = ""
    while pos <= n:
        if pos != n:
            ch = rest[pos]
        if phase == in_spaces:
            if pos == n:
                break
            if go_is_space(ch):
                pos += 1
                continue
            phase = in_word
        if phase in (in_word, in_quote) and pos == n:
            if blank_ok or word:
                words.append("".join(word))
            break
        if phase == in_word:
            if go_is_space(ch):
                phase = in_spaces
                if blank_ok or word:
                    words.append("".join(word))
                word = []
                blank_ok = False
                pos += 1
                continue
            if ch in ("'", '"'):
                quote = ch
                blank_ok = True
                phase = in_quote
            if ch == d.escape_token:
                if pos + 1 == n:
                    pos += 1
                    continue  # an escape token at the end of the line is dropped
                # unquoted, the escape token and the next character go in as they are
                word.append(ch)
                pos += 1
                ch = rest[pos]
            word.append(ch)
            pos += 1
            continue
        if phase == in_quote:
            if ch == quote:
                phase = in_word
            # inside ' nothing escapes; inside " the escape token does
            if ch == d.escape_token and quote != "'":
                if pos + 1 == n:
                    phase = in_word
                    pos += 1
                    continue
                pos += 1
                word.append(ch)
                ch = rest[pos]
            word.append(ch)
        pos += 1
    return words


def _key_value(key: str, value: str) -> Node:
    return Node(value=key, next=Node(value=value))


def parse_name_val(rest: str, key: str, d: _Directives) -> Node | None:
    """ENV and LABEL: ``name=value ...``, or the legacy ``name value`` (one pair)."""
    words = parse_words(rest, d)
    if not words:
        return None
    if "=" not in words[0]:
        parts = _WHITESPACE.split(rest, maxsplit=1)
        if len(parts) < 2:
            raise ParseError(f"{key} must have two arguments")
        return _key_value(parts[0], parts[1])
    head: Node | None = None
    prev: Node | None = None
    for word in words:
        if "=" not in word:
            raise ParseError(
                f"Syntax error - can't find = in {go_quote(word)}. Must be of the form: name=value"
            )
        name, _, value = word.partition("=")
        node = _key_value(name, value)
        if head is None:
            head = node
        if prev is not None:
            prev.next = node
        prev = node.next
    return head


def parse_env(rest: str, d: _Directives) -> tuple[Node | None, dict[str, bool]]:
    return parse_name_val(rest, "ENV", d), {}


def parse_label(rest: str, d: _Directives) -> tuple[Node | None, dict[str, bool]]:
    return parse_name_val(rest, "LABEL", d), {}


def parse_name_or_name_val(rest: str, d: _Directives) -> tuple[Node | None, dict[str, bool]]:
    """ARG: words that are ``name`` or ``name=value``, checked in the second pass."""
    return _chain(parse_words(rest, d)), {}


def parse_strings_whitespace_delimited(
    rest: str, d: _Directives
) -> tuple[Node | None, dict[str, bool]]:
    if rest == "":
        return None, {}
    return _chain(_WHITESPACE.split(rest)), {}


def parse_string(rest: str, d: _Directives) -> tuple[Node | None, dict[str, bool]]:
    """The whole rest of the line as one argument (MAINTAINER, USER, WORKDIR, STOPSIGNAL)."""
    if rest == "":
        return None, {}
    return Node(value=rest), {}


def _reject_constant(name: str) -> object:
    raise ValueError(name)  # Go's JSON has no NaN or Infinity


def _go_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(text)  # out of float64 range: an error in Go
    return value


_JSON = json.JSONDecoder(
    parse_constant=_reject_constant, parse_float=_go_float, parse_int=_go_float
)


def parse_json(rest: str, d: _Directives) -> tuple[Node | None, dict[str, bool]]:
    """An exec-form array of strings; what follows the array on the line is ignored."""
    rest = _trim_left_space(rest)
    if not rest.startswith("["):
        raise ValueError(f"Error parsing {rest!r} as a JSON array")
    value, _ = _JSON.raw_decode(rest)
    if not isinstance(value, list):
        raise ValueError("not an array")
    for item in value:
        if not isinstance(item, str):
            raise _NotStringArray
    return _chain([_go_json_string(v) for v in value]), {"json": True}


def _go_json_string(value: str) -> str:
    """Go decodes an escaped lone surrogate (``\\ud800``) to U+FFFD."""
    if any(0xD800 <= ord(c) <= 0xDFFF for c in value):
        return "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in value)
    return value


def _try_json(rest: str, d: _Directives) -> tuple[Node | None, dict[str, bool]] | None:
    try:
        return parse_json(rest, d)
    except _NotStringArray:
        raise ParseError(_NOT_STRING_ARRAY) from None
    except (ValueError, RecursionError):
        return None


def parse_maybe_json(rest: str, d: _Directives) -> tuple[Node | None, dict[str, bool]]:
    """Exec form if the rest is a JSON array of strings, else the rest as one argument."""
    if rest == "":
        return None, {}
    parsed = _try_json(rest, d)
    if parsed is not None:
        return parsed
    return Node(value=rest), {}


def parse_maybe_json_to_list(rest: str, d: _Directives) -> tuple[Node | None, dict[str, bool]]:
    """Exec form if a JSON array of strings, else whitespace-separated words (ADD, COPY, VOLUME)."""
    parsed = _try_json(rest, d)
    if parsed is not None:
        return parsed
    return parse_strings_whitespace_delimited(rest, d)


def parse_health_config(rest: str, d: _Directives) -> tuple[Node | None, dict[str, bool]]:
    """HEALTHCHECK: a type word (``CMD``/``NONE``) then a command as in :func:`parse_maybe_json`."""
    view = _latin1(rest)  # Go scans bytes here
    sep = 0
    while sep < len(view) and not go_is_space(view[sep]):
        sep += 1
    nxt = sep
    while nxt < len(view) and go_is_space(view[nxt]):
        nxt += 1
    if sep == 0:
        return None, {}
    typ = _from_latin1(view[:sep])
    cmd, attrs = parse_maybe_json(_from_latin1(view[nxt:]), d)
    return Node(value=typ, next=cmd), attrs


_DISPATCH: dict[str, _LineParser] = {
    "add": parse_maybe_json_to_list,
    "arg": parse_name_or_name_val,
    "cmd": parse_maybe_json,
    "copy": parse_maybe_json_to_list,
    "entrypoint": parse_maybe_json,
    "env": parse_env,
    "expose": parse_strings_whitespace_delimited,
    "from": parse_strings_whitespace_delimited,
    "healthcheck": parse_health_config,
    "label": parse_label,
    "maintainer": parse_string,
    "onbuild": parse_sub_command,
    "run": parse_maybe_json,
    "shell": parse_maybe_json,
    "stopsignal": parse_string,
    "user": parse_string,
    "volume": parse_maybe_json_to_list,
    "workdir": parse_string,
}


def _node_from_line(line: str, d: _Directives) -> Node:
    cmd, flags, args = split_command(line)
    fn = _DISPATCH.get(cmd, parse_ignore)
    nxt, attrs = fn(args, d)
    return Node(value=cmd, original=line, flags=flags, next=nxt, attributes=attrs)
