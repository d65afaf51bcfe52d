"""berth.image.reference: distribution/reference normalisation and parsing."""

from __future__ import annotations

import pytest

from berth import errdefs
from berth.image.reference import (
    InvalidReference,
    Reference,
    is_valid_digest,
    is_valid_tag,
    parse,
    parse_any,
    parse_normalized_named,
    repo_tag_reference,
)

HEX = "0123456789abcdef" * 4
DIGEST = "sha256:" + HEX


@pytest.mark.parametrize(
    ("raw", "domain", "path", "tag", "digest", "full", "familiar"),
    [
        ("busybox", "docker.io", "library/busybox", "", "", "docker.io/library/busybox", "busybox"),
        (
            "busybox:1.36",
            "docker.io",
            "library/busybox",
            "1.36",
            "",
            "docker.io/library/busybox:1.36",
            "busybox:1.36",
        ),
        (
            "library/busybox",
            "docker.io",
            "library/busybox",
            "",
            "",
            "docker.io/library/busybox",
            "busybox",
        ),
        (
            "docker.io/busybox",
            "docker.io",
            "library/busybox",
            "",
            "",
            "docker.io/library/busybox",
            "busybox",
        ),
        (
            "index.docker.io/library/busybox:x",
            "docker.io",
            "library/busybox",
            "x",
            "",
            "docker.io/library/busybox:x",
            "busybox:x",
        ),
        ("user/app", "docker.io", "user/app", "", "", "docker.io/user/app", "user/app"),
        ("a/b/c", "docker.io", "a/b/c", "", "", "docker.io/a/b/c", "a/b/c"),
        (
            "docker.io/library/a/b",
            "docker.io",
            "library/a/b",
            "",
            "",
            "docker.io/library/a/b",
            "library/a/b",
        ),
        (
            "localhost:5000/x:y",
            "localhost:5000",
            "x",
            "y",
            "",
            "localhost:5000/x:y",
            "localhost:5000/x:y",
        ),
        ("localhost/x", "localhost", "x", "", "", "localhost/x", "localhost/x"),
        (
            "quay.io/org/img:v1",
            "quay.io",
            "org/img",
            "v1",
            "",
            "quay.io/org/img:v1",
            "quay.io/org/img:v1",
        ),
        ("Host/x", "Host", "x", "", "", "Host/x", "Host/x"),
        (
            "[::1]:5000/img",
            "[::1]:5000",
            "img",
            "",
            "",
            "[::1]:5000/img",
            "[::1]:5000/img",
        ),
        (
            f"busybox@{DIGEST}",
            "docker.io",
            "library/busybox",
            "",
            DIGEST,
            f"docker.io/library/busybox@{DIGEST}",
            f"busybox@{DIGEST}",
        ),
        (
            f"busybox:1@{DIGEST}",
            "docker.io",
            "library/busybox",
            "1",
            DIGEST,
            f"docker.io/library/busybox:1@{DIGEST}",
            f"busybox:1@{DIGEST}",
        ),
        (
            "my-app_x__z/a--b.c:T_a.g-1",
            "docker.io",
            "my-app_x__z/a--b.c",
            "T_a.g-1",
            "",
            "docker.io/my-app_x__z/a--b.c:T_a.g-1",
            "my-app_x__z/a--b.c:T_a.g-1",
        ),
    ],
)
def test_parse_normalized_named(
    raw: str, domain: str, path: str, tag: str, digest: str, full: str, familiar: str
) -> None:
    ref = parse_normalized_named(raw)
    assert (ref.domain, ref.path, ref.tag, ref.digest) == (domain, path, tag, digest)
    assert str(ref) == full
    assert ref.familiar() == familiar
    assert ref.name == f"{domain}/{path}"
    # familiar() round-trips through the parser
    assert parse_normalized_named(ref.familiar()) == ref
    assert parse_normalized_named(str(ref)) == ref


def test_familiar_name_strips_only_library_of_docker_io() -> None:
    assert parse_normalized_named("busybox:1").familiar_name() == "busybox"
    assert parse_normalized_named("user/app:1").familiar_name() == "user/app"
    assert parse_normalized_named("quay.io/library/x").familiar_name() == "quay.io/library/x"


def test_uppercase_repository_is_refused() -> None:
    with pytest.raises(InvalidReference) as exc:
        parse_normalized_named("Busybox")
    assert str(exc.value) == (
        "invalid reference format: repository name (library/Busybox) must be lowercase"
    )
    with pytest.raises(InvalidReference) as exc:
        parse_normalized_named("user/App:tag")
    assert str(exc.value) == (
        "invalid reference format: repository name (user/App) must be lowercase"
    )


def test_uppercase_tag_is_fine() -> None:
    assert parse_normalized_named("busybox:LATEST").tag == "LATEST"


def test_64_hex_is_not_a_repository_name() -> None:
    with pytest.raises(InvalidReference) as exc:
        parse_normalized_named(HEX)
    assert str(exc.value) == (
        f"invalid repository name ({HEX}), cannot specify 64-byte hexadecimal strings"
    )
    # a 12-character hex string is a fine name
    assert parse_normalized_named(HEX[:12]).path == "library/" + HEX[:12]


def test_invalid_reference_is_invalid_parameter() -> None:
    assert issubclass(InvalidReference, errdefs.InvalidParameter)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("", "invalid reference format"),
        ("busybox:", "invalid reference format"),
        (":tag", "invalid reference format"),
        ("bad name", "invalid reference format"),
        ("busybox:tag with space", "invalid reference format"),
        ("a//b", "invalid reference format"),
        ("-a", "invalid reference format"),
        ("a-", "invalid reference format"),
        ("busybox:" + "t" * 129, "invalid reference format"),
        ("busybox@sha256:abc", "invalid reference format"),
        (f"busybox@md5:{HEX}", "invalid reference format: unsupported digest algorithm"),
        (f"busybox@sha256:{HEX}00", "invalid checksum digest length"),
        (f"busybox@sha256:{HEX.upper()}", "invalid checksum digest format"),
        ("busybox:täg", "invalid reference format"),  # Go's \w is ASCII
        ("busybox\n", "invalid reference format"),
        (
            "x/" + "a" * 250,
            "invalid reference format: repository name must not be more than 255 characters",
        ),
    ],
)
def test_parse_normalized_named_errors(raw: str, message: str) -> None:
    with pytest.raises(InvalidReference) as exc:
        parse_normalized_named(raw)
    assert str(exc.value) == message


def test_parse_requires_a_name() -> None:
    with pytest.raises(InvalidReference) as exc:
        parse("")
    assert str(exc.value) == (
        "invalid reference format: repository name must have at least one component"
    )


def test_parse_uppercase_path() -> None:
    with pytest.raises(InvalidReference) as exc:
        parse("docker.io/library/Busybox")
    assert str(exc.value) == "invalid reference format: repository name must be lowercase"


def test_tag_name_only() -> None:
    ref = parse_normalized_named("busybox").tag_name_only()
    assert str(ref) == "docker.io/library/busybox:latest"
    assert ref.familiar() == "busybox:latest"
    tagged = parse_normalized_named("busybox:1")
    assert tagged.tag_name_only() is tagged
    digested = parse_normalized_named(f"busybox@{DIGEST}")
    assert digested.tag_name_only() == digested
    assert digested.tag_name_only().tag == ""


def test_with_tag_and_name_only() -> None:
    ref = parse_normalized_named(f"busybox:1@{DIGEST}")
    assert ref.with_tag("2") == Reference("docker.io", "library/busybox", "2", "")
    assert ref.name_only() == Reference("docker.io", "library/busybox")
    with pytest.raises(InvalidReference, match="invalid tag format"):
        ref.with_tag("-bad")
    with pytest.raises(InvalidReference, match="invalid tag format"):
        ref.with_tag("")


def test_parse_any() -> None:
    assert parse_any(HEX) == DIGEST
    assert parse_any(DIGEST) == DIGEST
    short = parse_any(HEX[:12])
    assert isinstance(short, Reference)
    assert str(short) == f"docker.io/library/{HEX[:12]}"
    named = parse_any("busybox:1")
    assert isinstance(named, Reference)
    assert named.familiar() == "busybox:1"
    # not a digest: "sha256" is then a repository with a tag, as in Go
    odd = parse_any("sha256:" + HEX[:10])
    assert odd == Reference("docker.io", "library/sha256", HEX[:10])
    with pytest.raises(InvalidReference, match="must be lowercase"):
        parse_any("Busybox")


def test_repo_tag_reference() -> None:
    assert repo_tag_reference("", "x") is None
    ref = repo_tag_reference("busybox", "")
    assert ref is not None
    assert str(ref) == "docker.io/library/busybox:latest"
    ref = repo_tag_reference("busybox", "v2")
    assert ref is not None
    assert str(ref) == "docker.io/library/busybox:v2"
    ref = repo_tag_reference("localhost:5000/app:old", "new")
    assert ref is not None
    assert str(ref) == "localhost:5000/app:new"
    ref = repo_tag_reference("app:keep", "")
    assert ref is not None
    assert ref.familiar() == "app:keep"


def test_repo_tag_reference_errors() -> None:
    with pytest.raises(InvalidReference, match="cannot import digest reference"):
        repo_tag_reference(f"busybox@{DIGEST}", "")
    with pytest.raises(InvalidReference, match="invalid tag format"):
        repo_tag_reference("busybox", "bad tag")
    with pytest.raises(InvalidReference, match="must be lowercase"):
        repo_tag_reference("BusyBox", "x")


def test_is_valid_tag_and_digest() -> None:
    assert is_valid_tag("latest")
    assert is_valid_tag("_x")
    assert is_valid_tag("a" * 128)
    assert not is_valid_tag("a" * 129)
    assert not is_valid_tag(".x")
    assert not is_valid_tag("-x")
    assert not is_valid_tag("x\n")
    assert is_valid_digest(DIGEST)
    assert not is_valid_digest("sha256:abc")
    assert not is_valid_digest(HEX)
