"""berth.builder.shell_lex against buildkit's shell lexer tests and the reference dockerd.

``ENV_VAR_TEST`` is buildkit's ``envVarTest`` (as moby vendors it) and ``WORDS_TEST`` its
``wordsTest``; the modifier cases that dockerd 20.10 lacks (``#``, ``%``, ``/``, and
``-``/``+`` without a colon) follow moby 28's vendored lexer and were checked against
bash where bash means the same thing.  The error messages are dockerd's.
"""

from __future__ import annotations

import pytest

from berth.builder.shell_lex import Lex, ShellLexError, envs_from_list, go_is_space, go_trim_space

# platform | source | expected ("error" for any error); A = all, U = unix, W = windows
ENV_VAR_TEST = r"""
A|hello                    |     hello
A|he'll'o                  |     hello
A|he'llo                   |     error
A|he\'llo                  |     he'llo
A|he\\'llo                 |     error
A|abc\tdef                 |     abctdef
A|"abc\tdef"               |     abc\tdef
A|"abc\\tdef"              |     abc\tdef
A|'abc\tdef'               |     abc\tdef
A|hello\                   |     hello
A|hello\\                  |     hello\
A|"hello                   |     error
A|"hello\"                 |     error
A|"hel'lo"                 |     hel'lo
A|'hello                   |     error
A|'hello\'                 |     hello\
A|'hello\there'            |     hello\there
A|'hello\\there'           |     hello\\there
A|"''"                     |     ''
A|$.                       |     $.
A|he$1x                    |     hex
A|he$.x                    |     he$.x
U|he$pwd.                  |     he.
W|he$pwd.                  |     he/home.
A|he$PWD                   |     he/home
A|he\$PWD                  |     he$PWD
A|he\\$PWD                 |     he\/home
A|"he\$PWD"                |     he$PWD
A|"he\\$PWD"               |     he\/home
A|\${}                     |     ${}
A|\${}aaa                  |     ${}aaa
A|he\${}                   |     he${}
A|he\${}xx                 |     he${}xx
A|${}                      |     error
A|${}aaa                   |     error
A|he${}                    |     error
A|he${}xx                  |     error
A|he${hi}                  |     he
A|he${hi}xx                |     hexx
A|he${PWD}                 |     he/home
A|he${.}                   |     error
A|he${XXX:-000}xx          |     he000xx
A|he${PWD:-000}xx          |     he/homexx
A|he${XXX:-$PWD}xx         |     he/homexx
A|he${XXX:-${PWD:-yyy}}xx  |     he/homexx
A|he${XXX:-${YYY:-yyy}}xx  |     heyyyxx
A|he${XXX:YYY}             |     error
A|he${XXX?}                |     error
A|he${XXX:?}               |     error
A|he${PWD?}                |     he/home
A|he${PWD:?}               |     he/home
A|he${NULL?}               |     he
A|he${NULL:?}              |     error
A|he${XXX:+${PWD}}xx       |     hexx
A|he${PWD:+${XXX}}xx       |     hexx
A|he${PWD:+${SHELL}}xx     |     hebashxx
A|he${XXX:+000}xx          |     hexx
A|he${PWD:+000}xx          |     he000xx
A|'he${XX}'                |     he${XX}
A|"he${PWD}"               |     he/home
A|"he'$PWD'"               |     he'/home'
A|"$PWD"                   |     /home
A|'$PWD'                   |     $PWD
A|'\$PWD'                  |     \$PWD
A|'"hello"'                |     "hello"
A|he\$PWD                  |     he$PWD
A|"he\$PWD"                |     he$PWD
A|'he\$PWD'                |     he\$PWD
A|he${PWD                  |     error
A|he${PWD:=000}xx          |     error
A|he${PWD:+${PWD}:}xx      |     he/home:xx
A|he${XXX:-\$PWD:}xx       |     he$PWD:xx
A|he${XXX:-\${PWD}z}xx     |     he${PWDz}xx
A|안녕하세요                 |     안녕하세요
A|안'녕'하세요               |     안녕하세요
A|안'녕하세요                |     error
A|안녕\'하세요               |     안녕'하세요
A|안\\'녕하세요              |     error
A|안녕\t하세요               |     안녕t하세요
A|"안녕\t하세요"             |     안녕\t하세요
A|'안녕\t하세요              |     error
A|안녕하세요\                |     안녕하세요
A|안녕하세요\\               |     안녕하세요\
A|"안녕하세요                |     error
A|"안녕하세요\"              |     error
A|"안녕'하세요"              |     안녕'하세요
A|'안녕하세요                |     error
A|'안녕하세요\'              |     안녕하세요\
A|안녕$1x                    |     안녕x
A|안녕$.x                    |     안녕$.x
U|안녕$pwd.                  |     안녕.
W|안녕$pwd.                  |     안녕/home.
A|안녕$PWD                   |     안녕/home
A|안녕\$PWD                  |     안녕$PWD
A|안녕\\$PWD                 |     안녕\/home
A|안녕\${}                   |     안녕${}
A|안녕\${}xx                 |     안녕${}xx
A|안녕${}                    |     error
A|안녕${}xx                  |     error
A|안녕${hi}                  |     안녕
A|안녕${hi}xx                |     안녕xx
A|안녕${PWD}                 |     안녕/home
A|안녕${.}                   |     error
A|안녕${XXX:-000}xx          |     안녕000xx
A|안녕${PWD:-000}xx          |     안녕/homexx
A|안녕${XXX:-$PWD}xx         |     안녕/homexx
A|안녕${XXX:-${PWD:-yyy}}xx  |     안녕/homexx
A|안녕${XXX:-${YYY:-yyy}}xx  |     안녕yyyxx
A|안녕${XXX:YYY}             |     error
A|안녕${XXX:+${PWD}}xx       |     안녕xx
A|안녕${PWD:+${XXX}}xx       |     안녕xx
A|안녕${PWD:+${SHELL}}xx     |     안녕bashxx
A|안녕${XXX:+000}xx          |     안녕xx
A|안녕${PWD:+000}xx          |     안녕000xx
A|'안녕${XX}'                |     안녕${XX}
A|"안녕${PWD}"               |     안녕/home
A|"안녕'$PWD'"               |     안녕'/home'
A|'"안녕"'                   |     "안녕"
A|안녕\$PWD                  |     안녕$PWD
A|"안녕\$PWD"                |     안녕$PWD
A|'안녕\$PWD'                |     안녕\$PWD
A|안녕${PWD                  |     error
A|안녕${PWD:=000}xx          |     error
A|안녕${PWD:+${PWD}:}xx      |     안녕/home:xx
A|안녕${XXX:-\$PWD:}xx       |     안녕$PWD:xx
A|안녕${XXX:-\${PWD}z}xx     |     안녕${PWDz}xx
A|$KOREAN                    |     한국어
A|안녕$KOREAN                |     안녕한국어
A|${{aaa}                   |     error
A|${aaa}}                   |     }
A|${aaa                     |     error
A|${{aaa:-bbb}              |     error
A|${aaa:-bbb}}              |     bbb}
A|${aaa:-bbb                |     error
A|${aaa:-bbb}               |     bbb
A|${aaa:-${bbb:-ccc}}       |     ccc
A|${aaa:-bbb ${foo}         |     error
A|${aaa:-bbb {foo}          |     bbb {foo
A|${:}                      |     error
A|${:-bbb}                  |     error
A|${:+bbb}                  |     error
A|$1                        |
A|${1}                      |
A|${1:+bbb}                 |
A|${1:-bbb}                 |     bbb
A|$2                        |
A|${2}                      |
A|${2:+bbb}                 |
A|${2:-bbb}                 |     bbb
A|$9                        |
A|${9}                      |
A|${9:+bbb}                 |
A|${9:-bbb}                 |     bbb
A|$999                      |
A|${999}                    |
A|${999:+bbb}               |
A|${999:-bbb}               |     bbb
A|$999aaa                   |     aaa
A|${999}aaa                 |     aaa
A|${999:+bbb}aaa            |     aaa
A|${999:-bbb}aaa            |     bbbaaa
A|$001                      |
A|${001}                    |
A|${001:+bbb}               |
A|${001:-bbb}               |     bbb
A|$001aaa                   |     aaa
A|${001}aaa                 |     aaa
A|${001:+bbb}aaa            |     aaa
A|${001:-bbb}aaa            |     bbbaaa
A|$@                        |
A|${@}                      |
A|${@:+bbb}                 |
A|${@:-bbb}                 |     bbb
A|$@@@                      |     @@
A|$@aaa                     |     aaa
A|${@}aaa                   |     aaa
A|${@:+bbb}aaa              |     aaa
A|${@:-bbb}aaa              |     bbbaaa
A|$*                        |
A|${*}                      |
A|${*:+bbb}                 |
A|${*:-bbb}                 |     bbb
A|$#                        |
A|${#}                      |
A|${#:+bbb}                 |
A|${#:-bbb}                 |     bbb
A|$?                        |
A|${?}                      |
A|${?:+bbb}                 |
A|${?:-bbb}                 |     bbb
A|$-                        |
A|${-}                      |
A|${-:+bbb}                 |
A|${-:-bbb}                 |     bbb
A|$$                        |
A|${$}                      |
A|${$:+bbb}                 |
A|${$:-bbb}                 |     bbb
A|$!                        |
A|${!}                      |
A|${!:+bbb}                 |
A|${!:-bbb}                 |     bbb
A|$0                        |
A|${0}                      |
A|${0:+bbb}                 |
A|${0:-bbb}                 |     bbb
"""

ENVS = ["PWD=/home", "SHELL=bash", "KOREAN=한국어", "NULL="]


def _env_var_cases() -> list[tuple[str, str]]:
    cases = []
    for line in ENV_VAR_TEST.strip().splitlines():
        platform, source, expected = (part.strip() for part in line.split("|"))
        if platform in ("A", "U"):
            cases.append((source, expected))
    return cases


@pytest.mark.parametrize(("source", "expected"), _env_var_cases())
def test_env_var_test(source: str, expected: str) -> None:
    lex = Lex("\\")
    if expected == "error":
        with pytest.raises(ShellLexError):
            lex.process_word(source, ENVS)
    else:
        assert lex.process_word(source, ENVS) == expected


# word | expected words (comma separated); "ENV k=v" lines add to the environment.
# Trailing blanks are significant: "\n\" marks the end of such a line.
WORDS_TEST = """
hello | hello
hello${hi}bye | hellobye
ENV hi=hi
hello${hi}bye | hellohibye
ENV space=abc  def
hello${space}bye | helloabc,defbye
hello"${space}"bye | helloabc  defbye
hello "${space}"bye | hello,abc  defbye
ENV leading=  ab c
hello${leading}def | hello,ab,cdef
hello"${leading}" def | hello  ab c,def
hello"${leading}" | hello  ab c
hello${leading} | hello,ab,c
ENV trailing=ab c   \n\
hello${trailing} | helloab,c
hello${trailing}d | helloab,c,d
hello"${trailing}"d | helloab c   d
hel"lo${trailing}" | helloab c   \n\
hello" there  " | hello there  \n\
hello there     | hello,there
hello\\ there | hello there
hello" there | error
hello\\" there | hello",there
hello"\\\\" | hello\\
hello"\\\\"" | error
"""


def _words_cases() -> list[tuple[list[str], str, list[str]]]:
    env: list[str] = []
    cases = []
    for raw in WORDS_TEST.strip("\n").split("\n"):
        line = raw.replace("\\n\\", "")  # the marker keeps trailing blanks visible
        if line.startswith("ENV "):
            env.append(line[4:].lstrip(" "))
            continue
        word, expected = line.split("|")
        cases.append((list(env), word.strip(), expected.lstrip(" ").split(",")))
    return cases


@pytest.mark.parametrize(("env", "word", "expected"), _words_cases())
def test_words_test(env: list[str], word: str, expected: list[str]) -> None:
    lex = Lex("\\")
    try:
        result = lex.process_words(word, env)
    except ShellLexError:
        result = ["error"]
    assert result == expected


MODIFIERS = {
    "v": "aabbccdd",
    "p": "/usr/local/bin/python3.11",
    "e": "",
    "s": "--x--",
    "u": "μ-",
    "f": "a.b.c",
    "star": "a*b*c",
}


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        # remove a suffix (%, shortest; %%, longest) or a prefix (#, ##): as bash does
        ("${v%c*}", "aabbc"),
        ("${v%%c*}", "aabb"),
        ("${v#*b}", "bccdd"),
        ("${v##*b}", "ccdd"),
        ("${p##*/}", "python3.11"),
        ("${p%/*}", "/usr/local/bin"),
        ("${p#/}", "usr/local/bin/python3.11"),
        ("${p%.*}", "/usr/local/bin/python3"),
        ("${p%%.*}", "/usr/local/bin/python3"),
        ("${s%%-*}", ""),
        ("${s%-*}", "--x-"),
        ("${s#*-}", "-x--"),
        ("${s##*-}", ""),
        ("${v#a}", "abbccdd"),
        ("${v##ab}", "aabbccdd"),
        ("${v%d}", "aabbccd"),
        ("${v%%cd}", "aabbccdd"),
        ("${v#zz}", "aabbccdd"),
        ("${u#?}", "-"),
        ("${v#}", "aabbccdd"),
        ("${v%}", "aabbccdd"),
        ("${v##}", "aabbccdd"),
        ("${f%.?}", "a.b"),
        ("${nope#a}", ""),
        (r"${star#*\*}", "b*c"),
        # replace the first match (/) or all (//); patterns are greedy
        ("${f/./-}", "a-b.c"),
        ("${f//./-}", "a-b-c"),
        ("${v/b/X}", "aaXbccdd"),
        ("${v//b/X}", "aaXXccdd"),
        ("${v/b*/X}", "aaX"),
        ("${v//?/x}", "xxxxxxxx"),
        ("${nope//a/b}", ""),
        (r"${star//\*/+}", "a+b+c"),
        (r"${p//\//:}", ":usr:local:bin:python3.11"),
        # no anchors in buildkit's patterns: # is a literal here, unlike bash
        ("${v/#a/X}", "aabbccdd"),
        # Go's ReplaceAllString: $0 is the match, $$ a dollar; an empty match right
        # after a match is not replaced
        (r"${f//b/[\$0]}", r"a.[\b].c"),
        ("${v//c*/<>}", "aabb<>"),
        # without the colon, only unset counts (an empty value is set)
        ("${v-def}", "aabbccdd"),
        ("${nope-def}", "def"),
        ("${e-def}", ""),
        ("${e:-def}", "def"),
        ("${v+alt}", "alt"),
        ("${nope+alt}", ""),
        ("${e+alt}", "alt"),
        ("${e:+alt}", ""),
        ("${e?}", ""),
    ],
)
def test_modifiers(word: str, expected: str) -> None:
    assert Lex().process_word(word, MODIFIERS) == expected


def test_replace_all_skips_an_empty_match_after_a_match() -> None:
    # * is greedy: one match of the whole value, then an empty one at its end that Go
    # does not replace (Python's re.sub would give "--")
    assert Lex().process_word("${x//*/-}", {"x": "abc"}) == "-"
    assert Lex().process_word("${x//*/-}", {"x": ""}) == "-"
    assert Lex().process_word("${x//a*/-}", {"x": "baaac"}) == "b-"


@pytest.mark.parametrize(
    ("word", "message"),
    [
        ("${x}", None),
        ("he${PWD", "unsupported modifier (\ufffd) in substitution"),
        ("${x:#a}", "unsupported modifier (:#) in substitution"),
        ("${x:%a}", "unsupported modifier (:%) in substitution"),
        ("${x:=y}", "unsupported modifier (:=) in substitution"),
        ("${x^^}", "unsupported modifier (^) in substitution"),
        ("${x,}", "unsupported modifier (,) in substitution"),
        ("${x:?}", "x: is not allowed to be unset"),
        ("${x:?custom message}", "x: custom message"),
        ("${x?}", "x: is not allowed to be unset"),
        ("${e:?}", "e: is not allowed to be empty"),
        ("${e:?empty!}", "e: empty!"),
        ("${}", "syntax error: bad substitution"),
        ("${:-x}", "syntax error: bad substitution"),
        ("${{x}", "syntax error: bad substitution"),
        ("${", "syntax error: missing '}'"),
        ("${x:-abc", "syntax error: missing '}'"),
        ("${x#abc", "syntax error: missing '}'"),
        ("${v//}", "syntax error: missing '/' in ${}"),
        ("${v/c}", "syntax error: missing '/' in ${}"),
        ("${v/a/b", "syntax error: missing '}'"),
        (r"${v#\a}", r"invalid pattern (\a) in substitution: invalid escape '\a'"),
        (r"${v/\a/b}", r"invalid pattern (\a) in substitution: invalid escape '\a'"),
        ('"abc', "unexpected end of statement while looking for matching double-quote"),
        ("'abc", "unexpected end of statement while looking for matching single-quote"),
        # an inner error at the end of the word is reported as the missing brace
        ("${x:-'abc}", "syntax error: missing '}'"),
        ("${x:-${}}", "syntax error: bad substitution"),
    ],
)
def test_errors(word: str, message: str | None) -> None:
    env = {"v": "aabbccdd", "e": ""}
    if message is None:
        assert Lex().process_word(word, env) == ""
        return
    with pytest.raises(ShellLexError) as err:
        Lex().process_word(word, env)
    # dockerd wraps the reason with the word, Go-quoted
    quoted = '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'
    assert str(err.value) == f"failed to process {quoted}: {message}"
    assert err.value.__class__.__mro__[1].__name__ == "InvalidParameter"


def test_error_message_of_the_reference() -> None:
    # as dockerd 20.10 printed it for `FROM ${x:?oops}`
    with pytest.raises(ShellLexError, match=r'^failed to process "\$\{x:\?oops\}": x: oops$'):
        Lex().process_word("${x:?oops}", [])


def test_backtick_escape_token() -> None:
    lex = Lex("`")
    assert lex.process_word("c:\\dir", []) == "c:\\dir"  # a backslash is a plain character
    assert lex.process_word('"q`"x"', []) == 'q"x'
    assert lex.process_word("x` y", []) == "x y"
    assert lex.process_word("`$HOME", {"HOME": "/root"}) == "$HOME"
    assert lex.process_words("a` b c", []) == ["a b", "c"]


def test_escaped_characters_do_not_split_words() -> None:
    assert Lex().process_words(r"a\ b c\\ d", []) == ["a b", "c\\", "d"]
    assert Lex().process_words("'a b' \"c d\"e", []) == ["a b", "c de"]
    assert Lex().process_words("  ", []) == []
    assert Lex().process_words("$X", {"X": "  80   443/udp "}) == ["80", "443/udp"]
    assert Lex().process_words('"$X"', {"X": " 80 "}) == [" 80 "]


def test_env_forms() -> None:
    lex = Lex()
    # a later KEY=value wins; a bare KEY is set and empty; a mapping works as is
    assert lex.process_word("$a-$b-${b:-unset}", ["a=1", "a=2", "b"]) == "2--unset"
    assert lex.process_word("${b-unset}", ["b"]) == ""
    assert lex.process_word("$a", {"a": "m"}) == "m"
    assert lex.process_word("$a", None) == ""
    assert envs_from_list(["a=1=2", "b", "a=3"]) == {"a": "3", "b": ""}
    # names are case-sensitive on Linux
    assert lex.process_word("$Path", ["PATH=/bin"]) == ""


def test_matches_are_reported() -> None:
    result = Lex().process_word_with_matches("$a ${b:-x} $c", {"a": "1", "c": "3"})
    assert result.result == "1 x 3"
    assert result.words == ["1", "x", "3"]
    assert result.matched == {"a", "c"}
    assert result.unmatched == {"b"}


def test_parser_switches() -> None:
    assert Lex(raw_quotes=True).process_word("'a'\"b\"", []) == "'a'\"b\""
    assert Lex(raw_escapes=True).process_word(r"a\ b", []) == r"a\ b"
    assert Lex(raw_escapes=True).process_word(r'"a\"b"', []) == r"a\"b"
    assert Lex(skip_process_quotes=True).process_word("'$a'", {"a": "x"}) == "'x'"
    skip = Lex(skip_unset_env=True)
    assert skip.process_word("$a ${b} ${c:-d} ${e#f} ${g/h/i} $x", {"x": "1"}) == (
        "$a ${b} ${c:-d} ${e#f} ${g/h/i} 1"
    )


def test_a_leading_byte_order_mark_is_dropped() -> None:
    # Go's text/scanner skips a BOM at the start of its input
    assert Lex().process_word("\ufeffabc", []) == "abc"
    assert Lex().process_word("a\ufeffbc", []) == "a\ufeffbc"


def test_go_spaces() -> None:
    assert all(go_is_space(c) for c in "\t\n\v\f\r \x85\xa0\u2000\u3000")
    assert not any(go_is_space(c) for c in "\x1c\x1d\x1e\x1fa\u200b")
    assert go_trim_space("\x85 a b\xa0\t") == "a b"
    # an unquoted non-breaking space splits words, as Go's unicode.IsSpace says
    assert Lex().process_words("a\xa0b", []) == ["a", "b"]
