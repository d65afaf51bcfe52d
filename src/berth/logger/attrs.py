"""The ``attrs`` of json-file lines: moby's ``Info.ExtraAttributes`` and log ``tag``.

The ``labels``/``env`` options name container labels and environment variables whose
values go into every line, ``labels-regex``/``env-regex`` select them by pattern, and
``tag`` adds a ``tag`` attribute.  moby expands ``tag`` as a Go template over the
container's info; berth expands the plain ``{{.Field}}`` forms (what ``docker logs``
documentation shows) and refuses any other template at create, so that a tag is never
written differently from what was asked.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

__all__ = [
    "TAG_FIELDS",
    "LogInfo",
    "check_options",
    "expand_tag",
    "extra_attributes",
]

_FIELD = re.compile(r"\{\{-?\s*\.([A-Za-z]+)\s*-?\}\}")


@dataclass(frozen=True)
class LogInfo:
    """What a tag template and the attribute options can read of a container."""

    container_id: str
    container_name: str  # with its leading "/"
    image_id: str  # "sha256:…"
    image_name: str  # Config.Image as the user gave it
    hostname: str
    entrypoint: str
    args: tuple[str, ...]
    labels: Mapping[str, str]
    env: tuple[str, ...]


def _short(ident: str) -> str:
    return ident.partition(":")[2][:12] if ":" in ident else ident[:12]


#: The template fields of moby's ``logger.Info`` (methods and exported fields alike).
TAG_FIELDS: dict[str, Callable[[LogInfo], str]] = {
    "ID": lambda i: _short(i.container_id),
    "FullID": lambda i: i.container_id,
    "Name": lambda i: i.container_name.lstrip("/"),
    "ImageID": lambda i: _short(i.image_id),
    "ImageFullID": lambda i: i.image_id,
    "ImageName": lambda i: i.image_name,
    "Hostname": lambda i: i.hostname,
    "Command": lambda i: " ".join((i.entrypoint, *i.args)),
    "DaemonName": lambda i: "docker",  # what moby's tags show; scripts match on it
    "ContainerID": lambda i: i.container_id,
    "ContainerName": lambda i: i.container_name,
    "ContainerImageID": lambda i: i.image_id,
    "ContainerImageName": lambda i: i.image_name,
}


def check_options(opts: Mapping[str, str]) -> str | None:
    """What is wrong with the attribute options, or None: a regex that does not compile, a
    tag template berth cannot expand."""
    for key in ("labels-regex", "env-regex"):
        if opts.get(key):
            try:
                re.compile(opts[key])
            except re.error as e:
                return f"invalid {key} {opts[key]!r}: {e}"
    tag = opts.get("tag", "")
    for m in _FIELD.finditer(tag):
        if m.group(1) not in TAG_FIELDS:
            return f"invalid tag {tag!r}: can't evaluate field {m.group(1)}"
    if "{{" in _FIELD.sub("", tag) or "}}" in _FIELD.sub("", tag):
        return (
            f"invalid tag {tag!r}: berth expands only {{{{.Field}}}} forms "
            f"({', '.join(sorted(TAG_FIELDS))}), not other Go template actions"
        )
    return None


def expand_tag(template: str, info: LogInfo) -> str:
    return _FIELD.sub(lambda m: TAG_FIELDS[m.group(1)](info), template)


def extra_attributes(opts: Mapping[str, str], info: LogInfo) -> dict[str, str]:
    """moby's ``ExtraAttributes`` plus the json-file ``tag`` (only when the user set one)."""
    extra: dict[str, str] = {}
    if opts.get("labels"):
        for key in opts["labels"].split(","):
            if key in info.labels:
                extra[key] = info.labels[key]
    if opts.get("labels-regex"):
        pattern = re.compile(opts["labels-regex"])
        extra.update({k: v for k, v in info.labels.items() if pattern.search(k)})
    env: dict[str, str] = {}
    for entry in info.env:
        key, sep, value = entry.partition("=")
        if sep:
            env[key] = value
    if opts.get("env"):
        for key in opts["env"].split(","):
            if key in env:
                extra[key] = env[key]
    if opts.get("env-regex"):
        pattern = re.compile(opts["env-regex"])
        extra.update({k: v for k, v in env.items() if pattern.search(k)})
    if opts.get("tag"):
        extra["tag"] = expand_tag(opts["tag"], info)
    return extra
