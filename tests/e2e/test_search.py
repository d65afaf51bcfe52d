"""``docker search`` with the real CLI and docker-py, against the v1 search index of
tests/e2e/search_index.py and against Debian's docker-registry, which has no search."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from berth.testing import Berthd
from tests.e2e.registries import (
    Registry,
    free_port,
    registry,  # noqa: F401  (fixtures are taken from the module's namespace)
)
from tests.e2e.search_index import (
    SearchIndex,
    basic_search_index,  # noqa: F401
    search_index,  # noqa: F401
    token_search_index,  # noqa: F401
)


def _table(out: str) -> list[list[str]]:
    """The rows of the CLI's table (header dropped), split on its column gaps."""
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "DESCRIPTION", "STARS", "OFFICIAL"], out
    return [[c.strip() for c in line.split("  ") if c.strip()] for line in lines[1:]]


def _auth_header(user: str, password: str, server: str) -> str:
    doc = {"username": user, "password": password, "serveraddress": server}
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode()


def test_search_shows_the_index_results(
    berthd: Berthd,
    search_index: SearchIndex,  # noqa: F811
) -> None:
    idx = search_index
    out = berthd.docker("search", f"{idx.host}/bus", check=False).stdout
    rows = _table(out)
    # every catalogue entry holding "bus", by stars (the CLI sorts), descriptions cut at 45
    assert [r[0] for r in rows] == [
        "busybox",
        "berth/busybox-tools",
        "someone/busy-app",
        "berth/quiet",
    ]
    assert rows[0] == ["busybox", "Busybox base image.", "3300", "[OK]"]
    assert rows[1][1] == "Busybox with the extra applets a test suite …"
    assert rows[1][2:] == ["7"]
    assert rows[3][1] == "Nothing busy here. Second line of the descri…"
    (asked,) = idx.searches()
    assert asked.query == {"q": ["bus"], "n": ["25"]}
    assert asked.docker_token == "true"
    assert asked.authorization == ""


def test_search_limit(berthd: Berthd, search_index: SearchIndex) -> None:  # noqa: F811
    idx = search_index
    out = berthd.docker("search", "--limit", "2", f"{idx.host}/bus", check=False).stdout
    assert [r[0] for r in _table(out)] == ["busybox", "berth/busybox-tools"]
    assert idx.searches()[-1].query["n"] == ["2"]
    too_many = berthd.docker("search", "--limit", "101", f"{idx.host}/bus", check=False)
    assert too_many.returncode == 1
    assert "limit 101 is outside the range of [1, 100]" in too_many.stderr
    status, _, body = berthd.request("GET", f"/images/search?term={idx.host}/bus&limit=ten")
    assert status == 400
    assert json.loads(body)["message"] == (
        'invalid limit specified: strconv.Atoi: parsing "ten": invalid syntax'
    )
    assert len(idx.searches()) == 1  # refused limits never reached the index


def test_search_filters(berthd: Berthd, search_index: SearchIndex) -> None:  # noqa: F811
    idx = search_index
    term = f"{idx.host}/bus"
    fmt = "{{.Name}}"
    starred = berthd.docker(
        "search", "--filter", "stars=3", "--format", fmt, term, check=False
    ).stdout
    assert starred.split() == ["busybox", "berth/busybox-tools"]
    highest = berthd.docker(
        "search", "--filter", "stars=3", "--filter", "stars=100", "--format", fmt, term, check=False
    ).stdout
    assert highest.split() == ["busybox"]
    official = berthd.docker(
        "search", "--filter", "is-official=true", "--format", fmt, term, check=False
    )
    assert official.stdout.split() == ["busybox"]
    others = berthd.docker(
        "search", "--filter", "is-official=false", "--format", fmt, term, check=False
    )
    assert others.stdout.split() == ["berth/busybox-tools", "someone/busy-app", "berth/quiet"]
    # deprecated: true matches nothing (one entry of the catalogue says it is automated)
    automated = berthd.docker(
        "search", "--filter", "is-automated=true", "--format", fmt, term, check=False
    )
    assert automated.stdout.split() == []
    unknown = berthd.docker("search", "--filter", "label=x", term, check=False)
    assert unknown.returncode == 1
    assert "invalid filter 'label'" in unknown.stderr
    bad_stars = berthd.docker("search", "--filter", "stars=many", term, check=False)
    assert bad_stars.returncode == 1
    assert "invalid filter 'stars=many'" in bad_stars.stderr
    bad_bool = berthd.docker("search", "--filter", "is-official=perhaps", term, check=False)
    assert bad_bool.returncode == 1
    assert "invalid filter 'is-official" in bad_bool.stderr


def test_search_no_trunc_and_format(
    berthd: Berthd,
    search_index: SearchIndex,  # noqa: F811
) -> None:
    idx = search_index
    full = berthd.docker("search", "--no-trunc", f"{idx.host}/busybox-tools", check=False).stdout
    rows = _table(full)
    assert rows == [
        [
            "berth/busybox-tools",
            "Busybox with the extra applets a test suite wants: a description longer than "
            "the forty-five characters the CLI shows",
            "7",
        ]
    ]
    lines = berthd.docker(
        "search",
        "--format",
        "{{.Name}}|{{.StarCount}}|{{.IsOfficial}}",
        f"{idx.host}/alpine",
        check=False,
    ).stdout.splitlines()
    assert lines == ["alpine|10500|[OK]"]
    as_json = berthd.docker(
        "search", "--format", "{{json .}}", f"{idx.host}/alpine", check=False
    ).stdout
    assert json.loads(as_json) == {
        "Name": "alpine",
        "Description": "A minimal Docker image based on Alpine Linux",
        "StarCount": "10500",
        "IsOfficial": "true",
    }
    nothing = berthd.docker("search", f"{idx.host}/no-such-thing", check=False).stdout
    assert nothing.splitlines()[1:] == []


def test_search_engine_api_answer(
    berthd: Berthd,
    search_index: SearchIndex,  # noqa: F811
) -> None:
    """The JSON array dockerd answers: its field names, is_automated always false."""
    idx = search_index
    status, headers, body = berthd.request("GET", f"/images/search?term={idx.host}/busybox-tools")
    assert status == 200, body
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == [
        {
            "star_count": 7,
            "is_official": False,
            "name": "berth/busybox-tools",
            "is_automated": False,
            "description": (
                "Busybox with the extra applets a test suite wants: a description longer "
                "than the forty-five characters the CLI shows"
            ),
        }
    ]
    status, _, body = berthd.request("GET", "/images/search?term=https://127.0.0.1:1/x")
    assert status == 400
    assert json.loads(body)["message"] == (
        "invalid repository name: repository name (https://127.0.0.1:1/x) should not have a scheme"
    )


def test_search_with_docker_py(
    berthd: Berthd,
    search_index: SearchIndex,  # noqa: F811
) -> None:
    import docker.errors

    idx = search_index
    client = berthd.client()
    try:
        found = client.images.search(f"{idx.host}/bus", limit=3)
        assert [r["name"] for r in found] == ["busybox", "berth/busybox-tools", "someone/busy-app"]
        assert found[1] == {
            "star_count": 7,
            "is_official": False,
            "name": "berth/busybox-tools",
            "is_automated": False,
            "description": idx.catalogue[1]["description"],
        }
        with pytest.raises(docker.errors.APIError) as refused:
            client.images.search(f"{idx.host}/bus", limit=500)
        assert refused.value.status_code == 400
        assert "limit 500 is outside the range of [1, 100]" in str(refused.value.explanation)
    finally:
        client.close()
    assert idx.searches()[0].query["n"] == ["3"]


def test_search_against_a_registry_without_search(
    berthd: Berthd,
    registry: Registry,  # noqa: F811
) -> None:
    """distribution 2.x has no v1 search: dockerd's message and what it means, exit 1."""
    res = berthd.docker("search", f"{registry.host}/busybox", check=False)
    assert res.returncode == 1
    assert res.stdout == ""
    assert res.stderr.strip() == (
        "Error response from daemon: unexpected status code 404: the registry "
        f"{registry.host} does not offer search (GET /v1/search)"
    )


def test_search_index_down(berthd: Berthd) -> None:
    port = free_port()  # nothing listens there
    res = berthd.docker("search", f"127.0.0.1:{port}/busybox", check=False)
    assert res.returncode == 1
    err = res.stderr
    assert f'invalid registry endpoint "http://127.0.0.1:{port}/v1/". HTTPS attempt: ' in err
    assert f'Get "https://127.0.0.1:{port}/v1/search?q=busybox&n=25": ' in err
    assert f'. HTTP attempt: Get "http://127.0.0.1:{port}/v1/search?q=busybox&n=25": ' in err
    assert "connection refused" in err
    assert berthd.docker(
        "version", "--format", "{{.Server.APIVersion}}", check=False
    ).stdout.strip()
    assert berthd.docker("images", "-q", check=False).returncode == 0


def test_search_with_basic_auth(
    berthd: Berthd,
    basic_search_index: SearchIndex,  # noqa: F811
    tmp_path: Path,
) -> None:
    idx = basic_search_index
    term = f"{idx.host}/bus"
    # No credentials: refused with a way out, as a 403 (on a 401 the CLI would prompt)
    anonymous = berthd.docker("search", term, check=False)
    assert anonymous.returncode == 1
    assert "no basic auth credentials" in anonymous.stderr
    assert f"log in with 'docker login {idx.host}'" in anonymous.stderr
    assert idx.searches() == []
    # Stored credentials: the CLI sends them as X-Registry-Auth, berthd as Basic
    token = base64.b64encode(f"{idx.username}:{idx.password}".encode()).decode()
    (tmp_path / "config.json").write_text(json.dumps({"auths": {idx.host: {"auth": token}}}))
    ok = berthd.docker("search", "--format", "{{.Name}}", term, config=tmp_path, check=False)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.split() == [
        "busybox",
        "berth/busybox-tools",
        "someone/busy-app",
        "berth/quiet",
    ]
    (asked,) = idx.searches()
    assert asked.authorization == "Basic " + token
    # Wrong credentials: the index's 401 in dockerd's words
    wrong = _auth_header(idx.username, "not-the-password", idx.host)
    status, _, body = berthd.request(
        "GET", f"/images/search?term={term}", headers={"X-Registry-Auth": wrong}
    )
    assert status == 403
    assert json.loads(body)["message"] == (
        "unexpected status code 401: unauthorized: authentication required "
        f"(log in with 'docker login {idx.host}')"
    )
    # An undecodable X-Registry-Auth is ignored, as dockerd ignores it for a search
    status, _, body = berthd.request(
        "GET", f"/images/search?term={term}", headers={"X-Registry-Auth": "%%%"}
    )
    assert status == 403
    assert b"no basic auth credentials" in body


def test_search_with_a_token(
    berthd: Berthd,
    token_search_index: SearchIndex,  # noqa: F811
) -> None:
    """An index behind the Bearer flow: a token for registry:catalog:search."""
    idx = token_search_index
    assert idx.token_server is not None
    term = f"{idx.host}/alpine"
    status, _, body = berthd.request("GET", f"/images/search?term={term}")
    assert status == 403
    assert json.loads(body)["message"] == (
        f"unauthorized: incorrect username or password (log in with 'docker login {idx.host}')"
    )
    auth = _auth_header(idx.username, idx.password, idx.host)
    status, _, body = berthd.request(
        "GET", f"/images/search?term={term}", headers={"X-Registry-Auth": auth}
    )
    assert status == 200, body
    assert [r["name"] for r in json.loads(body)] == ["alpine"]
    granted = [r for r in idx.token_server.requests if r.status == 200]
    assert [(r.user, r.scopes) for r in granted] == [(idx.username, ("registry:catalog:search",))]
    (asked,) = idx.searches()
    assert asked.authorization.startswith("Bearer ")
