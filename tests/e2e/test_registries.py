"""The registries of tests/e2e/registries.py on their own, without berth: each flavour answers
/v2/ as distribution does, serves what skopeo put in it, the token flow works and refuses bad
credentials, and nothing is left running afterwards."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import urllib.parse
from typing import Any, cast

import pytest

from tests.e2e.registries import (
    MT_DOCKER_LIST,
    MT_DOCKER_MANIFEST,
    MT_OCI_INDEX,
    MT_OCI_MANIFEST,
    SERVICE,
    OciImage,
    Registry,
    basic_header,
    htpasswd_registry,  # noqa: F401  (fixtures are taken from the module's namespace)
    http_request,
    oci_image,  # noqa: F401
    parse_challenge,
    registry,  # noqa: F401
    running_registry,
    token_registry,  # noqa: F401
)


def _check_served(reg: Registry, repo: str, image: OciImage, tag: str = "latest") -> None:
    """The index, both manifests and every blob are served, byte for byte, under *repo*."""
    r = reg.manifest(repo, tag)
    assert r.status == 200, r.body
    assert r.headers["content-type"] == MT_OCI_INDEX
    assert r.headers["docker-content-digest"] == image.index.digest
    assert r.body == image.blob_bytes(image.index.digest)
    by_digest = reg.manifest(repo, image.index.digest)
    assert by_digest.status == 200 and by_digest.body == r.body
    index = r.json()
    platforms = {
        (m["platform"]["architecture"], m["platform"].get("variant")) for m in index["manifests"]
    }
    assert platforms == {("amd64", None), ("arm64", "v8")}
    for img in image.images.values():
        m = reg.manifest(repo, img.manifest.digest)
        assert m.status == 200
        assert m.headers["content-type"] == MT_OCI_MANIFEST
        manifest = m.json()
        assert manifest["config"]["digest"] == img.config.digest
        config = reg.blob(repo, img.config.digest)
        assert config.status == 200
        assert json.loads(config.body)["config"]["Cmd"] == ["sh"]
        assert json.loads(config.body)["architecture"] == img.architecture
    for layer in image.layers:
        b = reg.blob(repo, layer.digest)
        assert b.status == 200
        assert "sha256:" + hashlib.sha256(b.body).hexdigest() == layer.digest
        assert len(b.body) == layer.size
    head = reg.request("HEAD", f"/v2/{repo}/blobs/{image.layers[0].digest}")
    assert head.status == 200
    assert int(head.headers["content-length"]) == image.layers[0].size
    missing = reg.blob(repo, "sha256:" + "0" * 64)
    assert missing.status == 404
    assert missing.json()["errors"][0]["code"] == "BLOB_UNKNOWN"


def _jwt_parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    def dec(part: str) -> dict[str, Any]:
        return cast(
            dict[str, Any], json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
        )

    header, claims, _sig = token.split(".")
    return dec(header), dec(claims)


def test_plain_registry(registry: Registry, oci_image: OciImage) -> None:  # noqa: F811
    r = http_request(registry.url + "/v2/")
    assert r.status == 200
    assert r.headers["docker-distribution-api-version"] == "registry/2.0"
    assert registry.tags("busybox") == []

    assert registry.push(oci_image, "busybox:latest") == oci_image.index.digest
    assert registry.tags("busybox") == ["latest"]
    _check_served(registry, "busybox", oci_image)

    # One platform alone keeps its manifest digest.
    digest = registry.push(oci_image, "single:amd64", ref="amd64", all_platforms=False)
    assert digest == oci_image.images["amd64"].manifest.digest
    m = registry.manifest("single", "amd64")
    assert m.headers["content-type"] == MT_OCI_MANIFEST

    # Docker schema 2: a manifest list of Docker manifests, same blobs.
    digest = registry.push(oci_image, "docker-format:latest", format="v2s2")
    lst = registry.manifest("docker-format", "latest")
    assert lst.headers["content-type"] == MT_DOCKER_LIST
    assert lst.headers["docker-content-digest"] == digest
    child = registry.manifest("docker-format", lst.json()["manifests"][0]["digest"])
    assert child.headers["content-type"] == MT_DOCKER_MANIFEST
    assert [layer["digest"] for layer in child.json()["layers"]] == [
        layer.digest for layer in oci_image.layers
    ]

    catalog = registry.request("GET", "/v2/_catalog").json()
    assert sorted(catalog["repositories"]) == ["busybox", "docker-format", "single"]


def test_htpasswd_registry(htpasswd_registry: Registry, oci_image: OciImage) -> None:  # noqa: F811
    reg = htpasswd_registry
    r = http_request(reg.url + "/v2/")
    assert r.status == 401
    assert parse_challenge(r.headers["www-authenticate"]) == ("basic", {"realm": "berth-test"})
    wrong = http_request(
        reg.url + "/v2/", headers={"Authorization": basic_header(reg.username, "no")}
    )
    assert wrong.status == 401
    right = http_request(
        reg.url + "/v2/", headers={"Authorization": basic_header(reg.username, reg.password)}
    )
    assert right.status == 200

    with pytest.raises(RuntimeError, match="skopeo copy failed"):
        reg.push(oci_image, "busybox:nocreds", ref="amd64", all_platforms=False, anonymous=True)
    assert reg.push(oci_image, "busybox:latest") == oci_image.index.digest
    _check_served(reg, "busybox", oci_image)
    anonymous = http_request(f"{reg.url}/v2/busybox/manifests/latest")
    assert anonymous.status == 401


def test_token_registry(token_registry: Registry, oci_image: OciImage) -> None:  # noqa: F811
    reg = token_registry
    ts = reg.token_server
    assert ts is not None
    r = http_request(reg.url + "/v2/")
    assert r.status == 401
    scheme, params = parse_challenge(r.headers["www-authenticate"])
    assert scheme == "bearer"
    assert params == {"realm": ts.realm, "service": SERVICE}
    r = http_request(f"{reg.url}/v2/busybox/manifests/latest")
    assert r.status == 401
    assert parse_challenge(r.headers["www-authenticate"])[1]["scope"] == "repository:busybox:pull"

    # The token server checks the Basic credentials.
    query = urllib.parse.urlencode({"service": SERVICE, "scope": "repository:busybox:pull"})
    for headers in ({}, {"Authorization": basic_header(reg.username, "wrong")}):
        refused = http_request(f"{ts.realm}?{query}", headers=headers)
        assert refused.status == 401
        assert refused.headers["www-authenticate"].startswith("Basic ")
    assert [q.status for q in ts.requests] == [401, 401]

    # skopeo goes through the challenge and gets a push token.
    assert reg.push(oci_image, "busybox:latest") == oci_image.index.digest
    pushes = [q for q in ts.requests if q.status == 200 and any("push" in s for s in q.scopes)]
    assert pushes and pushes[0].user == reg.username
    _check_served(reg, "busybox", oci_image)

    # A token's shape and what it opens.
    token = reg.token("repository:busybox:pull")
    header, claims = _jwt_parts(token)
    assert header["alg"] == "RS256" and header["x5c"] and header["kid"]
    assert claims["iss"] == ts.issuer and claims["aud"] == SERVICE
    assert claims["sub"] == reg.username
    assert claims["access"] == [{"type": "repository", "name": "busybox", "actions": ["pull"]}]
    assert {"exp", "nbf", "iat", "jti"} <= claims.keys()
    bearer = {"Authorization": f"Bearer {token}", "Accept": MT_OCI_INDEX}
    ok = http_request(f"{reg.url}/v2/busybox/manifests/latest", headers=bearer)
    assert ok.status == 200 and ok.headers["docker-content-digest"] == oci_image.index.digest
    other = http_request(f"{reg.url}/v2/other/manifests/latest", headers=bearer)
    assert other.status == 401
    assert 'error="insufficient_scope"' in other.headers["www-authenticate"]
    forged = token[:-8] + ("AAAAAAAA" if not token.endswith("AAAAAAAA") else "BBBBBBBB")
    bad = http_request(
        f"{reg.url}/v2/busybox/manifests/latest", headers={"Authorization": f"Bearer {forged}"}
    )
    assert bad.status == 401

    # The OAuth2 form (what the docker CLI does with an identity token): a refresh token from
    # a password grant buys access tokens later; a wrong password gets 401.
    form = {
        "grant_type": "password",
        "username": reg.username,
        "password": reg.password,
        "service": SERVICE,
        "scope": "repository:busybox:pull",
        "access_type": "offline",
        "client_id": "berth-tests",
    }
    got = http_request(ts.realm, "POST", data=urllib.parse.urlencode(form).encode())
    assert got.status == 200
    refresh = got.json()["refresh_token"]
    wrong = http_request(
        ts.realm, "POST", data=urllib.parse.urlencode(dict(form, password="x")).encode()
    )
    assert wrong.status == 401
    again = http_request(
        ts.realm,
        "POST",
        data=urllib.parse.urlencode(
            {
                "grant_type": "refresh_token",
                "refresh_token": refresh,
                "service": SERVICE,
                "scope": "repository:busybox:pull",
            }
        ).encode(),
    )
    assert again.status == 200
    t2 = again.json()["access_token"]
    ok = http_request(f"{reg.url}/v2/busybox/tags/list", headers={"Authorization": f"Bearer {t2}"})
    assert ok.status == 200 and ok.json()["tags"] == ["latest"]


def test_token_registry_anonymous_pull(oci_image: OciImage) -> None:  # noqa: F811
    with running_registry("token", anonymous_pull=True) as reg:
        reg.push(oci_image, "busybox:latest")
        assert reg.token_server is not None
        query = urllib.parse.urlencode(
            {"service": SERVICE, "scope": "repository:busybox:pull,push"}
        )
        r = http_request(f"{reg.token_server.realm}?{query}")
        assert r.status == 200
        token = r.json()["token"]
        assert _jwt_parts(token)[1]["access"] == [
            {"type": "repository", "name": "busybox", "actions": ["pull"]}
        ]
        ok = http_request(
            f"{reg.url}/v2/busybox/tags/list", headers={"Authorization": f"Bearer {token}"}
        )
        assert ok.status == 200


def _refused(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.parametrize("auth", ["none", "htpasswd", "token"])
def test_registry_leaves_nothing(auth: str) -> None:
    with running_registry(auth) as reg:  # type: ignore[arg-type]
        pid, port, directory = reg.pid, reg.port, reg.dir
        token_port = reg.token_server.port if reg.token_server else None
        assert pid is not None and os.path.exists(f"/proc/{pid}")
        assert http_request(reg.url + "/v2/").status in (200, 401)
    assert not os.path.exists(f"/proc/{pid}")
    assert not directory.exists()
    assert _refused(port)
    if token_port is not None:
        assert _refused(token_port)
