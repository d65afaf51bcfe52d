"""Image references (``busybox``, ``localhost:5000/a/b:1``, ``x@sha256:...``).

The grammar and normalisation of distribution/reference: a name without a
registry belongs to ``docker.io`` and a one-component name there lives under
``library/``; the *familiar* form strips both again for display.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from berth import errdefs

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
OFFICIAL_REPO_PREFIX = "library/"
DEFAULT_TAG = "latest"

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_NAME = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*"
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
_DOMAIN = rf"(?:{_DOMAIN_NAME}|{_IPV6})(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_NAME = rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
# ASCII: Go's \w is [0-9A-Za-z_]; \Z: Go's $ does not match before a final newline.
_REFERENCE = re.compile(rf"^({_NAME})(?::({_TAG}))?(?:@({_DIGEST}))?\Z", re.ASCII)
_ANCHORED_TAG = re.compile(rf"^{_TAG}\Z", re.ASCII)
_ANCHORED_DIGEST = re.compile(rf"^{_DIGEST}\Z", re.ASCII)
_HEX64 = re.compile(r"^[a-f0-9]{64}\Z")
_NAME_MAX = 255


class InvalidReference(errdefs.InvalidParameter):
    pass


@dataclass(frozen=True, slots=True)
class Reference:
    """A normalised reference: ``domain/path`` with an optional tag and digest."""

    domain: str
    path: str
    tag: str = ""
    digest: str = ""

    @property
    def name(self) -> str:
        return f"{self.domain}/{self.path}"

    def __str__(self) -> str:
        s = self.name
        if self.tag:
            s += ":" + self.tag
        if self.digest:
            s += "@" + self.digest
        return s

    def familiar_name(self) -> str:
        if self.domain == DEFAULT_DOMAIN:
            path = self.path
            if (
                path.startswith(OFFICIAL_REPO_PREFIX)
                and "/" not in path[len(OFFICIAL_REPO_PREFIX) :]
            ):
                path = path[len(OFFICIAL_REPO_PREFIX) :]
            return path
        return self.name

    def familiar(self) -> str:
        s = self.familiar_name()
        if self.tag:
            s += ":" + self.tag
        if self.digest:
            s += "@" + self.digest
        return s

    def with_tag(self, tag: str) -> Reference:
        if not _ANCHORED_TAG.match(tag):
            raise InvalidReference("invalid tag format")
        return Reference(self.domain, self.path, tag, "")

    def tag_name_only(self) -> Reference:
        """Add ``:latest`` when there is neither tag nor digest."""
        if not self.tag and not self.digest:
            return Reference(self.domain, self.path, DEFAULT_TAG)
        return self

    def name_only(self) -> Reference:
        return Reference(self.domain, self.path)


def _split_domain(name: str) -> tuple[str, str]:
    first, sep, rest = name.partition("/")
    if not sep or (
        first != "localhost" and "." not in first and ":" not in first and first.lower() == first
    ):
        domain, remainder = DEFAULT_DOMAIN, name
    else:
        domain, remainder = first, rest
    if domain == LEGACY_DEFAULT_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in remainder:
        remainder = OFFICIAL_REPO_PREFIX + remainder
    return domain, remainder


def parse_normalized_named(s: str) -> Reference:
    """``ParseNormalizedNamed``: the full reference a user's short name stands for."""
    if _HEX64.match(s):
        raise InvalidReference(
            f"invalid repository name ({s}), cannot specify 64-byte hexadecimal strings"
        )
    domain, remainder = _split_domain(s)
    remote = remainder.split(":", 1)[0]
    if remote.lower() != remote:
        raise InvalidReference(
            f"invalid reference format: repository name ({remote}) must be lowercase"
        )
    return parse(f"{domain}/{remainder}")


def parse(s: str) -> Reference:
    """Parse a fully qualified reference string."""
    if not s:
        raise InvalidReference(
            "invalid reference format: repository name must have at least one component"
        )
    m = _REFERENCE.match(s)
    if not m:
        if _REFERENCE.match(s.lower()):
            raise InvalidReference("invalid reference format: repository name must be lowercase")
        raise InvalidReference("invalid reference format")
    name, tag, digest = m.group(1), m.group(2) or "", m.group(3) or ""
    if len(name) > _NAME_MAX:
        raise InvalidReference(
            "invalid reference format: repository name must not be more than "
            f"{_NAME_MAX} characters"
        )
    if digest:
        algo, _, hexpart = digest.partition(":")
        if algo != "sha256":
            raise InvalidReference("invalid reference format: unsupported digest algorithm")
        if len(hexpart) != 64:
            raise InvalidReference("invalid checksum digest length")
        if hexpart.lower() != hexpart:
            raise InvalidReference("invalid checksum digest format")
    first, sep, rest = name.partition("/")
    if sep and (first == "localhost" or "." in first or ":" in first or first.lower() != first):
        domain, path = first, rest
    else:
        domain, path = "", name
    return Reference(domain, path, tag, digest)


def parse_any(s: str) -> Reference | str:
    """``ParseAnyReference``: a digest (image ID) string, or a normalised name."""
    if _HEX64.match(s):
        return "sha256:" + s
    if s.startswith("sha256:") and _HEX64.match(s[7:]):
        return s
    return parse_normalized_named(s)


def repo_tag_reference(repo: str, tag: str) -> Reference | None:
    """The reference ``repo``+``tag`` query parameters name (tag/import); None when no repo."""
    if not repo:
        return None
    ref = parse_normalized_named(repo)
    if ref.digest:
        raise InvalidReference("cannot import digest reference")
    if tag:
        return ref.with_tag(tag)
    return ref.tag_name_only()


def is_valid_tag(tag: str) -> bool:
    return bool(_ANCHORED_TAG.match(tag))


def is_valid_digest(digest: str) -> bool:
    return bool(_ANCHORED_DIGEST.match(digest))
