"""Shell-style word processing of Dockerfile arguments: buildkit's ``shell.Lex``.

The classic builder expands ``$VAR``/``${VAR...}`` in an instruction's fields with
the build's environment right before the instruction runs, and removes quotes and
escapes the way a POSIX shell would (but without running anything).  The behaviour
is the one of moby 28's vendored buildkit lexer, modifier for modifier:
``${VAR}``, ``${VAR:-word}``, ``${VAR-word}``, ``${VAR:+word}``, ``${VAR+word}``,
``${VAR:?msg}``, ``${VAR?msg}``, ``${VAR#pattern}``, ``${VAR##pattern}``,
``${VAR%pattern}``, ``${VAR%%pattern}``, ``${VAR/pattern/repl}`` and
``${VAR//pattern/repl}``; anything else is buildkit's
``unsupported modifier (X) in substitution``.  Errors read as dockerd prints them:
``failed to process "<word>": <reason>``.

Pure logic: no I/O, no state shared between calls.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from berth.errdefs import InvalidParameter
from berth.utils.gostr import go_quote

#: What ``text/scanner`` returns past the end; never a real character.
_EOF = ""
#: ``string(rune(scanner.EOF))`` in Go: the replacement character.
_EOF_TEXT = "\ufffd"

#: Go's ``unicode.IsSpace``: Latin-1 spaces plus the White_Space code points above 0xFF.
_GO_SPACES = frozenset(
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)


def go_is_space(ch: str) -> bool:
    """Go's ``unicode.IsSpace`` (Python's ``isspace`` also counts U+001C..U+001F)."""
    return ch in _GO_SPACES


def go_trim_space(text: str) -> str:
    """Go's ``strings.TrimSpace``."""
    start, end = 0, len(text)
    while start < end and text[start] in _GO_SPACES:
        start += 1
    while end > start and text[end - 1] in _GO_SPACES:
        end -= 1
    return text[start:end]


class ShellLexError(InvalidParameter):
    """A word could not be processed; the message is dockerd's, with the word quoted."""


class _Fail(Exception):
    """An inner failure, before the ``failed to process`` wrapping."""


EnvLike = Mapping[str, str] | Iterable[str]


def envs_from_list(env: Iterable[str]) -> dict[str, str]:
    """``KEY=value`` entries to a map; a later entry wins, a bare ``KEY`` is set and empty."""
    out: dict[str, str] = {}
    for entry in env:
        key, _, value = entry.partition("=")
        out[key] = value
    return out


def _as_map(env: EnvLike | None) -> Mapping[str, str]:
    if env is None:
        return {}
    if isinstance(env, Mapping):
        return env
    return envs_from_list(env)


@dataclass
class WordResult:
    """One processed word: the joined result, its words, and the names looked up."""

    result: str
    words: list[str]
    matched: set[str] = field(default_factory=set)
    unmatched: set[str] = field(default_factory=set)


class Lex:
    """Processes words with one escape token (``\\`` or the backtick of ``# escape=```).

    ``raw_quotes`` keeps quote characters in the output, ``raw_escapes`` keeps escape
    tokens, ``skip_process_quotes`` treats quotes as plain characters and
    ``skip_unset_env`` leaves references to unset variables as written: the switches
    buildkit's parser uses; the dispatcher uses none of them.
    """

    def __init__(
        self,
        escape_token: str = "\\",
        *,
        raw_quotes: bool = False,
        raw_escapes: bool = False,
        skip_process_quotes: bool = False,
        skip_unset_env: bool = False,
    ) -> None:
        self.escape_token = escape_token
        self.raw_quotes = raw_quotes
        self.raw_escapes = raw_escapes
        self.skip_process_quotes = skip_process_quotes
        self.skip_unset_env = skip_unset_env

    def process_word(self, word: str, env: EnvLike | None = None) -> str:
        """The word with variables replaced and quotes/escapes removed, spaces kept."""
        return self.process_word_with_matches(word, env).result

    def process_words(self, word: str, env: EnvLike | None = None) -> list[str]:
        """As :meth:`process_word`, then split on whitespace that was not quoted.

        Whitespace inside an expanded variable splits too (``EXPOSE $PORTS``).
        """
        return self.process_word_with_matches(word, env).words

    def process_word_with_matches(self, word: str, env: EnvLike | None = None) -> WordResult:
        """Process *word* and report which variable names were found and which not."""
        sw = _ShellWord(self, word, _as_map(env))
        try:
            result, words = sw.process_stop_on(_EOF, self.raw_escapes)
        except _Fail as exc:
            raise ShellLexError(f"failed to process {go_quote(word)}: {exc}") from None
        return WordResult(result, words, sw.matches, sw.nonmatches)


class _Words:
    """buildkit's ``wordsStruct``: splits the output on unquoted whitespace."""

    def __init__(self) -> None:
        self.buf: list[str] = []
        self.words: list[str] = []
        self.in_word = False

    def add_char(self, ch: str) -> None:
        if go_is_space(ch) and self.in_word:
            if self.buf:
                self.words.append("".join(self.buf))
                self.buf = []
                self.in_word = False
        elif not go_is_space(ch):
            self.add_raw_char(ch)

    def add_raw_char(self, ch: str) -> None:
        self.buf.append(ch)
        self.in_word = True

    def add_string(self, text: str) -> None:
        for ch in text:
            self.add_char(ch)

    def add_raw_string(self, text: str) -> None:
        self.buf.append(text)
        self.in_word = True

    def get_words(self) -> list[str]:
        if self.buf:
            self.words.append("".join(self.buf))
            self.buf = []
            self.in_word = False
        return self.words


class _ShellWord:
    """The state of one word being processed (``shellWord``)."""

    def __init__(self, lex: Lex, word: str, envs: Mapping[str, str]) -> None:
        self.lex = lex
        self.escape = lex.escape_token
        # text/scanner drops a byte order mark at the very start of its input
        self.src = word[1:] if word.startswith("\ufeff") else word
        self.pos = 0
        self.envs = envs
        self.raw_escapes = lex.raw_escapes
        self.matches: set[str] = set()
        self.nonmatches: set[str] = set()

    # -- the scanner -------------------------------------------------------------------
    def peek(self) -> str:
        return self.src[self.pos] if self.pos < len(self.src) else _EOF

    def next(self) -> str:
        if self.pos < len(self.src):
            ch = self.src[self.pos]
            self.pos += 1
            return ch
        return _EOF

    # -- processing --------------------------------------------------------------------
    def process_stop_on(self, stop: str, raw_escapes: bool) -> tuple[str, list[str]]:
        """Read up to *stop* (or the end when *stop* is EOF); the result and its words."""
        saved = self.raw_escapes
        self.raw_escapes = raw_escapes
        try:
            return self._process_stop_on(stop)
        finally:
            self.raw_escapes = saved

    def _process_stop_on(self, stop: str) -> tuple[str, list[str]]:
        result: list[str] = []
        words = _Words()
        quotes = not self.lex.skip_process_quotes
        while self.peek() != _EOF:
            ch = self.peek()
            if stop != _EOF and ch == stop:
                self.next()
                return "".join(result), words.get_words()
            if ch == "$" or (quotes and ch in "'\""):
                if ch == "$":
                    tmp = self.process_dollar()
                    result.append(tmp)
                    words.add_string(tmp)
                else:
                    tmp = self.process_single_quote() if ch == "'" else self.process_double_quote()
                    result.append(tmp)
                    words.add_raw_string(tmp)
                continue
            ch = self.next()
            if ch == self.escape:
                if self.raw_escapes:
                    words.add_raw_char(ch)
                    result.append(ch)
                # the escape token escapes the next character, except at the end
                ch = self.next()
                if ch == _EOF:
                    break
                words.add_raw_char(ch)
            else:
                words.add_char(ch)
            result.append(ch)
        if stop != _EOF:
            raise _Fail(f"unexpected end of statement while looking for matching {stop}")
        return "".join(result), words.get_words()

    def process_single_quote(self) -> str:
        """Everything up to the next ``'`` as is: nothing escapes inside single quotes."""
        result: list[str] = []
        ch = self.next()
        if self.lex.raw_quotes:
            result.append(ch)
        while True:
            ch = self.next()
            if ch == _EOF:
                raise _Fail("unexpected end of statement while looking for matching single-quote")
            if ch == "'":
                if self.lex.raw_quotes:
                    result.append(ch)
                return "".join(result)
            result.append(ch)

    def process_double_quote(self) -> str:
        """Up to the next ``"``: ``$`` expands, the escape token escapes ``"``, ``$`` and itself."""
        result: list[str] = []
        ch = self.next()
        if self.lex.raw_quotes:
            result.append(ch)
        while True:
            nxt = self.peek()
            if nxt == _EOF:
                raise _Fail("unexpected end of statement while looking for matching double-quote")
            if nxt == '"':
                ch = self.next()
                if self.lex.raw_quotes:
                    result.append(ch)
                return "".join(result)
            if nxt == "$":
                result.append(self.process_dollar())
                continue
            ch = self.next()
            if ch == self.escape:
                if self.raw_escapes:
                    result.append(ch)
                following = self.peek()
                if following == _EOF:
                    continue  # an escape token at the end of the word is dropped
                if following in ('"', "$", self.escape):
                    ch = self.next()
            result.append(ch)

    def process_dollar(self) -> str:
        self.next()  # the $
        if self.peek() != "{":
            name = self.process_name()
            if not name:
                return "$"
            value, found = self.get_env(name)
            if not found and self.lex.skip_unset_env:
                return "$" + name
            return value

        self.next()  # the {
        nxt = self.peek()
        if nxt == _EOF:
            raise _Fail("syntax error: missing '}'")
        if nxt in ("{", "}", ":"):
            raise _Fail("syntax error: bad substitution")
        name = self.process_name()
        ch = self.next()
        chs = ch or _EOF_TEXT
        if ch == "}":
            value, found = self.get_env(name)
            if not found and self.lex.skip_unset_env:
                return "${" + name + "}"
            return value
        if ch in (":", "+", "-", "?", "#", "%"):
            null_is_unset = False
            if ch == ":":
                null_is_unset = True
                ch = self.next()
                chs += ch or _EOF_TEXT
            raw = ch in ("#", "%")
            if null_is_unset and raw:
                raise _Fail(f"unsupported modifier ({chs}) in substitution")
            word = self._stop_on_brace(raw)
            value, found = self.get_env(name)
            if self.lex.skip_unset_env and not found:
                return "${" + name + chs + word + "}"
            return self._modify(name, ch, chs, word, value, found, null_is_unset)
        if ch == "/":
            replace_all = self.peek() == "/"
            if replace_all:
                self.next()
            try:
                pattern, _ = self.process_stop_on("/", True)
            except _Fail:
                if self.peek() == _EOF:
                    raise _Fail("syntax error: missing '/' in ${}") from None
                raise
            replacement = self._stop_on_brace(True)
            value, found = self.get_env(name)
            if self.lex.skip_unset_env and not found:
                return "${" + name + "/" + pattern + "/" + replacement + "}"
            try:
                regex = _shell_pattern_to_regex(pattern, greedy=True, anchored=False)
            except _Fail as exc:
                raise _Fail(f"invalid pattern ({pattern}) in substitution: {exc}") from None
            if replace_all:
                return _go_replace_all(regex, value, replacement)
            m = regex.search(value)
            if m is not None:
                value = value[: m.start()] + replacement + value[m.end() :]
            return value
        raise _Fail(f"unsupported modifier ({chs}) in substitution")

    def _stop_on_brace(self, raw_escapes: bool) -> str:
        try:
            word, _ = self.process_stop_on("}", raw_escapes)
        except _Fail:
            if self.peek() == _EOF:
                raise _Fail("syntax error: missing '}'") from None
            raise
        return word

    @staticmethod
    def _modify(
        name: str, ch: str, chs: str, word: str, value: str, found: bool, null_is_unset: bool
    ) -> str:
        unset = not found or (null_is_unset and value == "")
        if ch == "-":
            return word if unset else value
        if ch == "+":
            return "" if unset else word
        if ch == "?":
            if not found:
                raise _Fail(f"{name}: {word or 'is not allowed to be unset'}")
            if null_is_unset and value == "":
                raise _Fail(f"{name}: {word or 'is not allowed to be empty'}")
            return value
        if ch in ("#", "%"):
            # #/% remove the shortest match, ##/%% the longest
            greedy = word.startswith(ch)
            if greedy:
                word = word[1:]
            if ch == "%":
                return _trim_suffix(word, value, greedy)
            return _trim_prefix(word, value, greedy)
        raise _Fail(f"unsupported modifier ({chs}) in substitution")

    def process_name(self) -> str:
        """A name: letters, digits and ``_``; or all digits; or one special parameter."""
        name: list[str] = []
        while (ch := self.peek()) != _EOF:
            if not name and ch.isdecimal():
                while (d := self.peek()) != _EOF and d.isdecimal():
                    name.append(self.next())
                return "".join(name)
            if not name and ch in "@*#?-$!0":
                return self.next()
            if not (ch.isalpha() or ch.isdecimal() or ch == "_"):
                break
            name.append(self.next())
        return "".join(name)

    def get_env(self, name: str) -> tuple[str, bool]:
        value = self.envs.get(name)
        if value is not None:
            self.matches.add(name)
            return value, True
        self.nonmatches.add(name)
        return "", False


def _shell_pattern_to_regex(pattern: str, *, greedy: bool, anchored: bool) -> re.Pattern[str]:
    """A shell wildcard (``*``, ``?``, ``\\`` escapes; no brackets) as a regular expression."""
    out: list[str] = ["^"] if anchored else []
    star = ".*" if greedy else ".*?"
    i = 0
    n = len(pattern)
    while i < n:
        tok = pattern[i]
        i += 1
        if tok == "*":
            out.append(star)
            continue
        if tok == "?":
            out.append(".")
            continue
        if tok == "\\":
            # \} and \/ escape the ${} syntax; the backslash is not part of the pattern
            if i < n and pattern[i] in "}/":
                continue
            out.append("\\")
            tok = pattern[i] if i < n else _EOF
            i += 1
            if tok not in ("*", "?", "\\"):
                raise _Fail(f"invalid escape '\\{tok or _EOF_TEXT}'")
        elif tok in "[]{}.+()|^$":
            out.append("\\")
        out.append(tok)
    return re.compile("".join(out))


def _trim_prefix(word: str, value: str, greedy: bool) -> str:
    try:
        regex = _shell_pattern_to_regex(word, greedy=greedy, anchored=True)
    except _Fail as exc:
        raise _Fail(f"invalid pattern ({word}) in substitution: {exc}") from None
    m = regex.search(value)
    return value[m.end() :] if m is not None else value


def _reverse_pattern(pattern: str) -> str:
    """Reverse a pattern keeping each escape before the character it escapes."""
    out = [""] * len(pattern)
    last = len(pattern) - 1
    i = 0
    while i <= last:
        tok = pattern[i]
        at = last - i
        if tok == "\\" and i != last:
            out[at - 1] = tok
            out[at] = pattern[i + 1]
            i += 2
        else:
            out[at] = tok
            i += 1
    return "".join(out)


def _trim_suffix(pattern: str, value: str, greedy: bool) -> str:
    # a leftmost match on the reversed value finds the shortest/longest suffix
    return _trim_prefix(_reverse_pattern(pattern), value[::-1], greedy)[::-1]


_TEMPLATE_NAME = re.compile(r"\{(\w+)\}|(\w+)")


def _go_expand(template: str, match: re.Match[str]) -> str:
    """Go's ``Regexp.Expand`` for a pattern whose only group is the whole match (``$0``)."""
    out: list[str] = []
    while True:
        before, dollar, after = template.partition("$")
        out.append(before)
        if not dollar:
            return "".join(out)
        template = after
        if template.startswith("$"):
            out.append("$")
            template = template[1:]
            continue
        ref = _TEMPLATE_NAME.match(template)
        if ref is None:
            out.append("$")  # malformed: the $ is kept as text
            continue
        name = ref.group(1) or ref.group(2)
        template = template[ref.end() :]
        if name == "0":  # other numbers and names are groups this pattern lacks
            out.append(match.group(0))


def _go_replace_all(regex: re.Pattern[str], src: str, template: str) -> str:
    """Go's ``ReplaceAllString``: an empty match right after a match is not replaced."""
    out: list[str] = []
    last_end = 0
    search = 0
    end = len(src)
    while search <= end:
        m = regex.search(src, search)
        if m is None:
            break
        out.append(src[last_end : m.start()])
        if m.end() > last_end or m.start() == 0:
            out.append(_go_expand(template, m))
        last_end = m.end()
        width = 1 if search < end else 0
        if search + width > m.end():
            search += width
        elif search + 1 > m.end():
            search += 1
        else:
            search = m.end()
    out.append(src[last_end:])
    return "".join(out)
