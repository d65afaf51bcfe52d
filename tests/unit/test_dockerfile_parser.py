"""berth.builder.parser: buildkit's parser test cases and the reference dockerd's behaviour.

``dockerfile_testfiles/<case>/{Dockerfile,result}`` are the parser's ``testfiles``
(moby's and buildkit's): the tree's dump must equal ``result``.  Three results differ
from the old files in moby's tree because the reference dockerd (20.10) parses those
Dockerfiles differently, as checked on it (through ``docker inspect`` of ONBUILD and
ENV values): a comment inside a continued instruction is skipped rather than ending
it (continueIndent), an empty continuation line is skipped with a warning
(empty-line-after-escape), and ``#escape`` after leading blanks is still a directive
(escape_whitespace).  The other expectations here were checked on dockerd 20.10 too.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from berth.builder.instructions import DockerfileParseError, parse_dockerfile
from berth.builder.parser import MAX_LINE_BYTES, Node, ParseError, parse, parse_words, split_command

TESTFILES = Path(__file__).parent / "dockerfile_testfiles"


@pytest.mark.parametrize("case", sorted(p.name for p in TESTFILES.iterdir()))
def test_testfiles(case: str) -> None:
    result = parse((TESTFILES / case / "Dockerfile").read_bytes())
    assert result.ast.dump() + "\n" == (TESTFILES / case / "result").read_text()


def _dump(text: str) -> list[str]:
    return [child.dump() for child in parse(text.encode()).ast.children]


def _lines(text: str) -> list[tuple[int, int]]:
    return [(c.start_line, c.end_line) for c in parse(text.encode()).ast.children]


# -- directives ---------------------------------------------------------------------------


def test_escape_directive_changes_the_continuation_token() -> None:
    result = parse(b"# escape=`\nFROM scratch\nRUN a `\n  b\\\nLABEL c=d\n")
    assert result.escape_token == "`"
    assert result.directives == {"escape": "`"}
    assert [c.dump() for c in result.ast.children] == [
        'from "scratch"',
        'run "a   b\\\\"',
        'label "c" "d"',
    ]


@pytest.mark.parametrize(
    ("text", "escape"),
    [
        ("# escape=`\nFROM x\n", "`"),
        ("#escape=`\nFROM x\n", "`"),
        ("  #escape = `\nFROM x\n", "`"),  # leading blanks: still a directive
        ("# ESCAPE = `  \nFROM x\n", "`"),  # the key in any case, blanks around
        ("# syntax=docker/dockerfile:1\n# escape=`\nFROM x\n", "`"),
        ("\n# escape=`\nFROM x\n", "\\"),  # an empty line ends the directives
        ("# foo=bar\n# escape=`\nFROM x\n", "\\"),  # so does an unknown one
        ("# a comment\n# escape=`\nFROM x\n", "\\"),  # and a comment
        ("FROM x\n# escape=`\n", "\\"),  # after an instruction it is a comment
        ("# escape=\\\nFROM x\n", "\\"),
    ],
)
def test_where_directives_count(text: str, escape: str) -> None:
    assert parse(text.encode()).escape_token == escape


def test_syntax_is_recorded_and_otherwise_ignored() -> None:
    result = parse(b"# syntax=docker/dockerfile:1.4\nFROM x\n")
    assert result.directives == {"syntax": "docker/dockerfile:1.4"}
    assert result.escape_token == "\\"
    assert [c.dump() for c in result.ast.children] == ['from "x"']


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("# escape=`\n# escape=\\\nFROM x\n", "only one escape parser directive can be used"),
        ("# syntax=a\n# syntax=b\nFROM x\n", "only one syntax parser directive can be used"),
        ("# escape=x\nFROM x\n", "invalid escape token 'x' does not match ` or \\"),
        ("\n\n", "file with no instructions"),
        ("# only a comment\n", "file with no instructions"),
        (
            'FROM x\nCMD ["a", 1]\n',
            "when using JSON array syntax, arrays must be comprised of strings only",
        ),
        ("FROM x\nENV x\n", "ENV must have two arguments"),
        ("FROM x\nLABEL x\n", "LABEL must have two arguments"),
        (
            "FROM x\nENV a=b c\n",
            'Syntax error - can\'t find = in "c". Must be of the form: name=value',
        ),
        (
            'FROM x\nLABEL a=1 "b c"="d e" f\n',
            'Syntax error - can\'t find = in "f". Must be of the form: name=value',
        ),
        (
            "FROM x\nENV a=${b:?must set b}\n",
            'Syntax error - can\'t find = in "set". Must be of the form: name=value',
        ),
        (
            'FROM x\nENV a=b\\ \nENV c d\\ e\nENV f "g h\nENV i=j\\\\\n',
            'Syntax error - can\'t find = in "c". Must be of the form: name=value',
        ),
    ],
)
def test_parse_errors(text: str, message: str) -> None:
    with pytest.raises(ParseError) as err:
        parse(text.encode())
    assert err.value.message == message
    # the builder shows them as dockerd does
    with pytest.raises(DockerfileParseError) as err2:
        parse_dockerfile(text.encode())
    assert str(err2.value) == f"failed to parse Dockerfile: {message}"


def test_parse_error_lines() -> None:
    with pytest.raises(ParseError) as err:
        parse(b"FROM x\nRUN a \\\n  b\nENV c\n")
    assert (err.value.start_line, err.value.end_line) == (4, 4)
    with pytest.raises(ParseError) as err:
        parse(b"FROM x\nENV a=1 \\\n b c\n")
    assert (err.value.start_line, err.value.end_line) == (2, 3)


# -- lines, comments, continuations -------------------------------------------------------


def test_comments_blank_lines_and_line_numbers() -> None:
    text = "# c\n\nFROM x\n   # indented comment\n\t\nRUN a \\\n  b \\\n  c\nCMD d\n"
    assert _dump(text) == ['from "x"', 'run "a   b   c"', 'cmd "d"']
    assert _lines(text) == [(3, 3), (6, 8), (9, 9)]


def test_comments_inside_a_continuation_are_dropped() -> None:
    text = "FROM x\nRUN a \\\n# one\n  # two\n  b\n"
    assert _dump(text) == ['from "x"', 'run "a   b"']
    assert _lines(text) == [(1, 1), (2, 5)]


def test_empty_continuation_lines_warn() -> None:
    result = parse(b"FROM x\nENV a=1 \\\n\n  b=2\nLABEL x=y \\\n # comment\n\n z=w\n")
    assert [c.dump() for c in result.ast.children] == [
        'from "x"',
        'env "a" "1" "b" "2"',
        'label "x" "y" "z" "w"',
    ]
    # word for word what dockerd 20.10 writes to the build's output
    assert result.print_warnings() == (
        "[WARNING]: Empty continuation line found in:\n    ENV a=1   b=2\n"
        "[WARNING]: Empty continuation line found in:\n    LABEL x=y  z=w\n"
        "[WARNING]: Empty continuation lines will become errors in a future release.\n"
    )
    assert parse(b"FROM x\n").print_warnings() == ""


def test_escaped_escape_at_the_end_is_not_a_continuation() -> None:
    # `a \\` ends the line; `b \\\` (odd) does not continue either: Go's regexp
    # wants a non-escape character before the last one
    text = "FROM x\nRUN a \\\\\nRUN b \\\\\\\nc\nRUN d \\  \t\n e\nRUN \\\nf\n"
    assert _dump(text) == [
        'from "x"',
        'run "a \\\\\\\\"',
        'run "b \\\\\\\\\\\\"',
        'c ""',
        'run "d  e"',
        'run "f"',
    ]


def test_continuation_at_the_end_of_the_file() -> None:
    assert _dump("FROM x\nRUN a \\") == ['from "x"', 'run "a"']
    assert _dump("FROM x\nRUN a \\\n") == ['from "x"', 'run "a"']
    assert _lines("FROM x\nRUN a \\\n") == [(1, 1), (2, 2)]


def test_bom_and_crlf() -> None:
    result = parse(b"\xef\xbb\xbfFROM x\r\nENV a=1 \\\r\n  b=2\r\nLABEL c=3\r\n")
    assert [c.dump() for c in result.ast.children] == [
        'from "x"',
        'env "a" "1" "b" "2"',
        'label "c" "3"',
    ]
    # only on the first line
    assert _dump("FROM x\n\ufeffRUN a\n")[1] == '\ufeffrun ""'  # an unknown instruction


def test_line_length_limit() -> None:
    # a line of 65535 bytes is fine, with or without its newline; 65536 is not
    ok = b"FROM x\nLABEL a=" + b"x" * (MAX_LINE_BYTES - 8)
    assert len(parse(ok).ast.children) == 2
    assert len(parse(ok + b"\n").ast.children) == 2
    for data in (ok + b"x", ok + b"x\n", ok + b"\r\n"):
        with pytest.raises(
            ParseError, match=r"^dockerfile line greater than max allowed size of 65535$"
        ):
            parse(data)
    # when no instruction came before it, there is nothing to build
    with pytest.raises(ParseError, match=r"^file with no instructions$"):
        parse(b"#" * 70000 + b"\nFROM x\n")


def test_heredocs_are_not_parsed() -> None:
    # the classic builder of the reference has no heredocs: the body lines are
    # instructions of their own (unknown ones keep an empty argument node)
    assert _dump("FROM x\nRUN <<EOF\necho hi\nEOF\n") == [
        'from "x"',
        'run "<<EOF"',
        'echo ""',
        'eof ""',
    ]
    with pytest.raises(
        Exception, match=r"^dockerfile parse error line 3: unknown instruction: ECHO$"
    ):
        parse_dockerfile(b"FROM scratch\nRUN <<EOF\necho hi\nEOF\n")


# -- per-instruction parsing -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "dump"),
    [
        # exec form: JSON array of strings; what follows the array is ignored
        ('CMD ["a", "b c"]', 'cmd "a" "b c"'),
        ('CMD ["a", "b"] trailing', 'cmd "a" "b"'),
        ('ENTRYPOINT [ "x" ,"y\\u00e9" ]', 'entrypoint "x" "yé"'),
        ("CMD []", "cmd"),
        # not JSON: the rest as one argument (shell form)
        ("CMD [\"a\", 'b']", 'cmd "[\\"a\\", \'b\']"'),
        ("ENTRYPOINT [a]", 'entrypoint "[a]"'),
        ('RUN ["a", NaN]', 'run "[\\"a\\", NaN]"'),
        ('RUN ["a", 1e999]', 'run "[\\"a\\", 1e999]"'),
        ("RUN  echo   a  ", 'run "echo   a"'),
        # ADD, COPY, VOLUME: JSON or whitespace-separated words
        ('COPY [ "test file", "/tmp" ]', 'copy "test file" "/tmp"'),
        ("COPY a  b\tc", 'copy "a" "b" "c"'),
        ("VOLUME /a /b", 'volume "/a" "/b"'),
        ("ADD", "add"),
        # FROM, EXPOSE: whitespace-separated words
        ("FROM a AS b", 'from "a" "AS" "b"'),
        ("EXPOSE 80 443/udp", 'expose "80" "443/udp"'),
        # MAINTAINER, USER, WORKDIR, STOPSIGNAL: the rest as one argument
        ("MAINTAINER A B <a@b>", 'maintainer "A B <a@b>"'),
        ("WORKDIR /a b", 'workdir "/a b"'),
        ("USER", "user"),
        # ENV and LABEL: name=value pairs (quotes kept for later) or legacy `name value`
        ("ENV a=1 b=\"two words\" c='$a'", 'env "a" "1" "b" "\\"two words\\"" "c" "\'$a\'"'),
        ("ENV a b c", 'env "a" "b c"'),
        ("ENV\tb\t c  d ", 'env "b" "c  d"'),
        ('ENV c "x y"  z', 'env "c" "\\"x y\\"  z"'),
        ("ENV k= l=m=n", 'env "k" "" "l" "m=n"'),
        ("ENV j=x\\ y", 'env "j" "x\\\\ y"'),
        ("ENV", "env"),
        ('LABEL "b c"="d e"', 'label "\\"b c\\"" "\\"d e\\""'),
        # ARG: words, name or name=value
        ("ARG a b=c", 'arg "a" "b=c"'),
        # HEALTHCHECK: a type word then a command
        ("HEALTHCHECK", "healthcheck"),
        ("HEALTHCHECK   CMD   a b", 'healthcheck "CMD" "a b"'),
        ('HEALTHCHECK CMD ["a"]', 'healthcheck "CMD" "a"'),
        ("HEALTHCHECK NONE", 'healthcheck "NONE"'),
        # ONBUILD: a whole instruction as its child
        ("ONBUILD RUN a", 'onbuild (run "a")'),
        ("ONBUILD --x=1 ADD --chown=1 a b", 'onbuild ["--x=1"] (add ["--chown=1"] "a" "b")'),
        # unknown instructions keep no arguments
        ("FOO bar baz", 'foo ""'),
    ],
)
def test_instruction_nodes(line: str, dump: str) -> None:
    children = parse(f"FROM x\n{line}\n".encode()).ast.children
    assert children[1].dump() == dump


def test_json_marks_exec_form() -> None:
    nodes = parse(b'FROM x\nCMD ["a"]\nCMD a\n').ast.children
    assert nodes[1].attributes == {"json": True}
    assert nodes[2].attributes == {}


def test_node_keeps_its_original_line() -> None:
    node = parse(b"FROM x\n  RUN  a \\\n  b  \n").ast.children[1]
    assert node.value == "run"
    assert node.original == "RUN  a   b  "


@pytest.mark.parametrize(
    ("line", "cmd", "flags", "args"),
    [
        ("COPY --from=a --chown=1:2 x y", "copy", ["--from=a", "--chown=1:2"], "x y"),
        ('COPY "--chown=a b" x y', "copy", [], '"--chown=a b" x y'),
        ('ADD --chown="a b" x y', "add", ["--chown=a b"], "x y"),
        ("RUN -- --foo=1 x", "run", [], "--foo=1 x"),
        ("RUN --a --b=\\'c x", "run", ["--a", "--b='c"], "x"),
        ("RUN --a", "run", ["--a"], ""),
        ("RUN --", "run", [], ""),
        ("RUN -x --a", "run", [], "-x --a"),
        ("  Run\t--a=1\targ  ", "run", ["--a=1"], "arg"),
        ("COPY --chown=é x y", "copy", ["--chown=é"], "x y"),
    ],
)
def test_split_command(line: str, cmd: str, flags: list[str], args: str) -> None:
    assert split_command(line) == (cmd, flags, args)


def test_parse_words_keeps_quotes_and_escapes() -> None:
    from berth.builder.parser import _Directives

    d = _Directives()
    assert parse_words("a=\"b c\" d='e f' g\\ h i\\", d) == ['a="b c"', "d='e f'", "g\\ h", "i"]
    assert parse_words("'a\\' b' c", d) == ["'a\\'", "b' c"]
    assert parse_words('"a\\" b" c', d) == ['"a\\" b"', "c"]
    assert parse_words("x=''", d) == ["x=''"]
    assert parse_words("  ", d) == []


def test_dump_of_flags_and_children() -> None:
    root = Node(start_line=-1)
    child = Node(value="copy", flags=["--from=a b"], next=Node(value="x", next=Node(value="y")))
    root.add_child(child, 3, 4)
    assert root.start_line == 3
    assert root.end_line == 4
    assert root.dump() == '(copy ["--from=a b"] "x" "y")'
