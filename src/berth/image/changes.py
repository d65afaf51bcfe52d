"""Dockerfile instructions applied to a config: ``docker import --change``.

Only the instructions that change configuration (not the filesystem) are
accepted, as with dockerd: CMD, ENTRYPOINT, ENV, EXPOSE, HEALTHCHECK, LABEL,
ONBUILD, STOPSIGNAL, USER, VOLUME and WORKDIR.
"""

from __future__ import annotations

import posixpath
import re

import msgspec

from berth import errdefs
from berth.types.container import Config, HealthConfig
from berth.types.wire import Empty
from berth.utils.signals import parse_signal
from berth.utils.timefmt import parse_go_duration

VALID = (
    "cmd",
    "entrypoint",
    "healthcheck",
    "env",
    "expose",
    "label",
    "onbuild",
    "stopsignal",
    "user",
    "volume",
    "workdir",
)


def apply_changes(config: Config, changes: list[str]) -> Config:
    """Return a copy of *config* with each instruction of *changes* applied in order."""
    cfg = msgspec.structs.replace(config)
    lines = _logical_lines(changes)
    if changes and not lines:
        raise errdefs.InvalidParameter("file with no instructions")
    cmd_set = False
    for line in lines:
        keyword, _, rest = line.partition(" ")
        if not keyword.strip():
            continue
        instr = keyword.lower()
        rest = rest.strip()
        if instr not in VALID:
            raise errdefs.InvalidParameter(f"{instr} is not a valid change command")
        if instr == "cmd":
            cfg.cmd = _command(rest, "CMD")
            cmd_set = True
        elif instr == "entrypoint":
            cfg.entrypoint = _command(rest, "ENTRYPOINT")
            if not cmd_set:
                cfg.cmd = None
        elif instr == "env":
            cfg.env = _apply_env(cfg.env or [], _name_values(rest, "ENV", cfg.env or []))
        elif instr == "label":
            labels = dict(cfg.labels or {})
            for k, v in _name_values(rest, "LABEL", cfg.env or []):
                labels[k] = v
            cfg.labels = labels
        elif instr == "expose":
            cfg.exposed_ports = _expose(rest, cfg.exposed_ports)
        elif instr == "user":
            if not rest:
                raise errdefs.InvalidParameter("USER requires exactly one argument")
            cfg.user = _word(rest, cfg.env or [])
        elif instr == "workdir":
            if not rest:
                raise errdefs.InvalidParameter("WORKDIR requires exactly one argument")
            wd = _word(rest, cfg.env or [])
            if not wd.startswith("/"):
                wd = posixpath.join(cfg.working_dir or "/", wd)
            cfg.working_dir = posixpath.normpath(wd)
        elif instr == "volume":
            vols = dict(cfg.volumes or {})
            for v in _list_or_words(rest, "VOLUME"):
                if not v.strip():
                    raise errdefs.InvalidParameter("VOLUME specified can not be an empty string")
                vols[v] = Empty()
            cfg.volumes = vols
        elif instr == "stopsignal":
            sig = _word(rest, cfg.env or [])
            parse_signal(sig)
            cfg.stop_signal = sig
        elif instr == "onbuild":
            cfg.on_build = [*(cfg.on_build or []), _onbuild(rest)]
        elif instr == "healthcheck":
            cfg.healthcheck = _healthcheck(rest)
    return cfg


def _logical_lines(changes: list[str]) -> list[str]:
    """Join backslash continuations and drop comments and blank lines."""
    text = "\n".join(changes)
    lines: list[str] = []
    current = ""
    for raw in text.split("\n"):
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        lines.append(current.strip())
        current = ""
    if current.strip():
        lines.append(current.strip())
    return lines


def _json_list(rest: str) -> list[str] | None:
    if not rest.startswith("["):
        return None
    try:
        value = msgspec.json.decode(rest)
    except msgspec.DecodeError:
        return None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return None


def _command(rest: str, name: str) -> list[str]:
    exec_form = _json_list(rest)
    if exec_form is not None:
        return exec_form
    if not rest:
        if name == "ENTRYPOINT":
            return []
        raise errdefs.InvalidParameter(f"{name} requires at least one argument")
    return ["/bin/sh", "-c", rest]


def _list_or_words(rest: str, name: str) -> list[str]:
    as_json = _json_list(rest)
    if as_json is not None:
        return as_json
    words = rest.split()
    if not words:
        raise errdefs.InvalidParameter(f"{name} requires at least one argument")
    return words


def _env_map(env: list[str]) -> dict[str, str]:
    out = {}
    for e in env:
        k, _, v = e.partition("=")
        out[k] = v
    return out


_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)


def _dollar(text: str, i: int, values: dict[str, str]) -> tuple[str, int]:
    """Expand the ``$NAME`` / ``${NAME}`` / ``${NAME:-word}`` at *text[i]*; (value, next index).

    ``:-`` / ``-`` give *word* when NAME is unset (or, with ``:``, empty);
    ``:+`` / ``+`` give *word* when it is set (and, with ``:``, not empty).
    Anything else is left as written.
    """
    j = i + 1
    if j < len(text) and text[j] == "{":
        end = text.find("}", j)
        if end < 0:
            raise errdefs.InvalidParameter(f"missing '}}' in {text!r}")
        body = text[j + 1 : end]
        m = _VAR_NAME.match(body)
        if not m:
            return text[i : end + 1], end + 1
        name, op = m.group(), body[m.end() :]
        value = values.get(name)
        if not op:
            return value or "", end + 1
        for prefix in (":-", ":+", "-", "+"):
            if op.startswith(prefix):
                word = _shell_words(op[len(prefix) :], values, split=False)[0]
                is_set = value is not None and (value != "" or not prefix.startswith(":"))
                if prefix.endswith("-"):
                    return (value or "") if is_set else word, end + 1
                return word if is_set else "", end + 1
        return text[i : end + 1], end + 1
    m = _VAR_NAME.match(text, j)
    if not m:
        return "$", j
    return values.get(m.group(), ""), m.end()


def _shell_words(text: str, values: dict[str, str], *, split: bool = True) -> list[str]:
    """The builder's shell lexer, as far as ``--change`` needs it.

    Quotes and backslash escapes are removed; ``$VAR`` is expanded except inside
    single quotes (and after a backslash).  With *split*, blanks outside quotes
    separate words; without, *text* is one word and keeps its blanks.
    """
    words: list[str] = []
    cur: list[str] = []
    in_word = False
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "'":
            close = text.find("'", i + 1)
            if close < 0:
                raise errdefs.InvalidParameter(f"unmatched quote in {text!r}")
            cur.append(text[i + 1 : close])
            i, in_word = close + 1, True
        elif c == '"':
            i += 1
            while True:
                if i >= n:
                    raise errdefs.InvalidParameter(f"unmatched quote in {text!r}")
                c = text[i]
                if c == '"':
                    i += 1
                    break
                if c == "\\" and i + 1 < n and text[i + 1] in '"$\\':
                    cur.append(text[i + 1])
                    i += 2
                elif c == "$":
                    value, i = _dollar(text, i, values)
                    cur.append(value)
                else:
                    cur.append(c)
                    i += 1
            in_word = True
        elif c == "\\":
            if i + 1 < n:
                cur.append(text[i + 1])
            i, in_word = i + 2, True
        elif c == "$":
            value, i = _dollar(text, i, values)
            cur.append(value)
            in_word = True
        elif split and c.isspace():
            if in_word:
                words.append("".join(cur))
                cur = []
                in_word = False
            i += 1
        else:
            cur.append(c)
            i, in_word = i + 1, True
    if in_word or not split:
        words.append("".join(cur))
    return words


def _word(text: str, env: list[str]) -> str:
    """One argument (USER, WORKDIR, ...): quotes removed, variables expanded, blanks kept."""
    return _shell_words(text, _env_map(env), split=False)[0]


def _name_values(rest: str, name: str, env: list[str]) -> list[tuple[str, str]]:
    if not rest:
        raise errdefs.InvalidParameter(f"{name} requires at least one argument")
    first = rest.split(None, 1)[0]
    if "=" not in first:
        # Legacy form: NAME value with spaces
        parts = rest.split(None, 1)
        if len(parts) < 2:
            raise errdefs.InvalidParameter(f"{name} must have two arguments")
        return [(parts[0], _word(parts[1], env))]
    pairs = []
    for word in _shell_words(rest, _env_map(env)):
        k, sep, v = word.partition("=")
        if not sep:
            raise errdefs.InvalidParameter(
                f"Syntax error - can't find = in {word!r}. Must be of the form: name=value"
            )
        if not k:
            raise errdefs.InvalidParameter(f"{name} names can not be blank")
        pairs.append((k, v))
    return pairs


def _apply_env(env: list[str], pairs: list[tuple[str, str]]) -> list[str]:
    out = list(env)
    for k, v in pairs:
        entry = f"{k}={v}"
        for i, existing in enumerate(out):
            if existing.partition("=")[0] == k:
                out[i] = entry
                break
        else:
            out.append(entry)
    return out


def _expose(rest: str, current: dict[str, Empty] | None) -> dict[str, Empty]:
    ports = dict(current or {})
    words = rest.split()
    if not words:
        raise errdefs.InvalidParameter("EXPOSE requires at least one argument")
    for word in words:
        port, _, proto = word.partition("/")
        proto = (proto or "tcp").lower()
        if proto not in ("tcp", "udp", "sctp"):
            raise errdefs.InvalidParameter(f"invalid proto: {proto}")
        start, _, end = port.partition("-")
        try:
            lo = int(start)
            hi = int(end) if end else lo
        except ValueError:
            raise errdefs.InvalidParameter(f"invalid containerPort: {word}") from None
        if not (0 < lo <= hi <= 65535):
            raise errdefs.InvalidParameter(f"invalid containerPort: {word}")
        for p in range(lo, hi + 1):
            ports[f"{p}/{proto}"] = Empty()
    return ports


def _onbuild(rest: str) -> str:
    keyword, _, args = rest.partition(" ")
    upper = keyword.upper()
    if upper in ("ONBUILD",):
        raise errdefs.InvalidParameter("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
    if upper in ("FROM", "MAINTAINER"):
        raise errdefs.InvalidParameter(f"{upper} isn't allowed as an ONBUILD trigger")
    if not keyword:
        raise errdefs.InvalidParameter("ONBUILD requires at least one argument")
    return f"{upper} {args.strip()}".strip()


_HEALTH_FLAG = re.compile(r"^--(interval|timeout|start-period|start-interval|retries)=(\S*)$")


def _healthcheck(rest: str) -> HealthConfig:
    words = rest.split()
    flags: dict[str, str] = {}
    while words and words[0].startswith("--"):
        m = _HEALTH_FLAG.match(words[0])
        if not m:
            raise errdefs.InvalidParameter(f"unknown flag: {words[0]}")
        flags[m.group(1)] = m.group(2)
        words.pop(0)
    if not words:
        raise errdefs.InvalidParameter("HEALTHCHECK requires at least one argument")
    kind = words[0].upper()
    if kind == "NONE":
        if len(words) > 1 or flags:
            raise errdefs.InvalidParameter("HEALTHCHECK NONE takes no arguments")
        return HealthConfig(test=["NONE"])
    if kind != "CMD":
        raise errdefs.InvalidParameter(f'Unknown type "{kind}" in HEALTHCHECK (try CMD)')
    cmd_rest = rest[rest.upper().index("CMD") + 3 :].strip()
    exec_form = _json_list(cmd_rest)
    if not (exec_form if exec_form is not None else cmd_rest):
        raise errdefs.InvalidParameter("Missing command after HEALTHCHECK CMD")
    test = ["CMD", *exec_form] if exec_form is not None else ["CMD-SHELL", cmd_rest]
    hc = HealthConfig(test=test)
    for key, attr in (
        ("interval", "interval"),
        ("timeout", "timeout"),
        ("start-period", "start_period"),
        ("start-interval", "start_interval"),
    ):
        if flags.get(key):
            d = parse_go_duration(flags[key])
            if d is None or d < 0:
                raise errdefs.InvalidParameter(f"invalid duration for --{key}: {flags[key]!r}")
            if 0 < d < 1_000_000:
                raise errdefs.InvalidParameter(f'Interval "{key}" cannot be less than 1ms')
            setattr(hc, attr, d)
    if flags.get("retries"):
        try:
            hc.retries = int(flags["retries"])
        except ValueError:
            raise errdefs.InvalidParameter(
                f"invalid --retries value {flags['retries']!r}"
            ) from None
        if hc.retries < 0:
            raise errdefs.InvalidParameter(f"--retries cannot be negative ({hc.retries})")
    return hc
