"""docker search's pure parts (term, limit, filters, the registry's answer) and the
search itself against the tests' v1 index on 127.0.0.1, without a daemon."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from berth import errdefs
from berth.distribution import search as s
from berth.distribution.registry import AuthConfig, Endpoint, RegistryClient
from berth.types.filters import Filters
from tests.e2e.registries import free_port
from tests.e2e.search_index import SearchIndex, running_search_index


@pytest.mark.parametrize(
    ("term", "index", "query"),
    [
        ("busybox", "docker.io", "busybox"),
        ("library/busybox", "docker.io", "busybox"),
        ("someone/app", "docker.io", "someone/app"),
        ("someone/library/app", "docker.io", "someone/library/app"),
        ("127.0.0.1:5000/bus", "127.0.0.1:5000", "bus"),
        ("127.0.0.1:5000/a/b", "127.0.0.1:5000", "a/b"),
        ("localhost/x", "localhost", "x"),
        ("registry.example/library/x", "registry.example", "library/x"),
        ("index.docker.io/library/x", "docker.io", "x"),
        ("docker.io/someone/x", "docker.io", "someone/x"),
        ("127.0.0.1:5000", "docker.io", "127.0.0.1:5000"),  # no slash: a Hub query
        ("", "docker.io", ""),
    ],
)
def test_split_term(term: str, index: str, query: str) -> None:
    assert s.split_term(term) == (index, query)


def test_a_term_with_a_scheme_is_refused() -> None:
    with pytest.raises(errdefs.InvalidParameter) as err:
        s.split_term("http://127.0.0.1:5000/x")
    assert str(err.value) == (
        "invalid repository name: repository name (http://127.0.0.1:5000/x) should not "
        "have a scheme"
    )


@pytest.mark.parametrize(
    ("raw", "limit"), [("", 25), ("0", 25), ("1", 1), ("+7", 7), ("100", 100), ("25", 25)]
)
def test_parse_limit(raw: str, limit: int) -> None:
    assert s.parse_limit(raw) == limit


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("101", "limit 101 is outside the range of [1, 100]"),
        ("-1", "limit -1 is outside the range of [1, 100]"),
        ("ten", 'invalid limit specified: strconv.Atoi: parsing "ten": invalid syntax'),
        (" 5", 'invalid limit specified: strconv.Atoi: parsing " 5": invalid syntax'),
        ("5_0", 'invalid limit specified: strconv.Atoi: parsing "5_0": invalid syntax'),
        ("٣", 'invalid limit specified: strconv.Atoi: parsing "٣": invalid syntax'),
        (
            "99999999999999999999",
            'invalid limit specified: strconv.Atoi: parsing "99999999999999999999": '
            "value out of range",
        ),
    ],
)
def test_parse_limit_refuses(raw: str, message: str) -> None:
    with pytest.raises(errdefs.InvalidParameter) as err:
        s.parse_limit(raw)
    assert str(err.value) == message


def _options(raw: dict[str, list[str]]) -> s.SearchOptions:
    return s.parse_options(Filters.from_param(json.dumps(raw)))


def test_parse_options() -> None:
    assert _options({}) == s.SearchOptions()
    assert _options({"is-official": ["true"]}) == s.SearchOptions(is_official=True)
    assert _options({"is-official": ["0"]}) == s.SearchOptions(is_official=False)
    assert _options({"stars": ["3", "10", "2"]}) == s.SearchOptions(min_stars=10)
    assert _options({"stars": ["-4"]}) == s.SearchOptions(min_stars=0)
    assert _options({"is-automated": ["true"]}).automated_only
    assert not _options({"is-automated": ["false"]}).automated_only


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"label": ["x"]}, "invalid filter 'label'"),
        ({"stars": ["3.5"]}, "invalid filter 'stars=3.5': strconv.Atoi: parsing \"3.5\""),
        ({"is-official": ["yes"]}, "invalid filter 'is-official"),
        ({"is-automated": ["true", "false"]}, "invalid filter 'is-automated"),
    ],
)
def test_parse_options_refuses(raw: dict[str, list[str]], message: str) -> None:
    with pytest.raises(errdefs.InvalidParameter) as err:
        _options(raw)
    assert str(err.value).startswith(message)


RESULTS = [
    s.SearchResult(star_count=1, is_official=False, name="a", is_automated=True),
    s.SearchResult(star_count=50, is_official=True, name="b"),
    s.SearchResult(star_count=5, is_official=False, name="c"),
    s.SearchResult(star_count=9, is_official=False, name="d"),
]


def test_apply_limit_then_filters_in_the_registry_order() -> None:
    names = [r.name for r in s.apply(RESULTS, 25, s.SearchOptions())]
    assert names == ["a", "b", "c", "d"]
    assert [r.name for r in s.apply(RESULTS, 2, s.SearchOptions())] == ["a", "b"]
    # the registry gave at most `limit`; filters then take from those, as dockerd's do
    assert [r.name for r in s.apply(RESULTS, 3, s.SearchOptions(min_stars=6))] == ["b"]
    assert [r.name for r in s.apply(RESULTS, 25, s.SearchOptions(is_official=False))] == [
        "a",
        "c",
        "d",
    ]
    assert s.apply(RESULTS, 25, s.SearchOptions(automated_only=True)) == []
    assert not any(r.is_automated for r in s.apply(RESULTS, 25, s.SearchOptions()))


def test_decode_results() -> None:
    body = json.dumps(
        {
            "num_results": 2,
            "query": "x",
            "results": [
                {"name": "x", "description": None, "star_count": 4, "extra": [1]},
                {"name": "y", "is_official": True, "is_automated": None},
            ],
        }
    ).encode()
    assert s.decode_results(body) == [
        s.SearchResult(star_count=4, name="x"),
        s.SearchResult(is_official=True, name="y"),
    ]
    assert s.decode_results(b'{"results": null}') == []
    for bad in (b"<html>", b'{"results": [{"star_count": "4"}]}', b"[]"):
        with pytest.raises(errdefs.System) as err:
            s.decode_results(bad)
        assert str(err.value).startswith("error decoding registry search results: ")


def test_search_path_escapes_as_go() -> None:
    assert s.search_path("bus", 25) == "/v1/search?q=bus&n=25"
    assert s.search_path("a/b c&d~e", 3) == "/v1/search?q=a%2Fb+c%26d~e&n=3"


def test_index_endpoints() -> None:
    client = RegistryClient(insecure=["10.1.0.0/16"])
    try:
        # Docker Hub's index, never a mirror and never http
        assert s.index_endpoints(client, "docker.io") == [Endpoint("https://index.docker.io")]
        assert [e.base for e in s.index_endpoints(client, "127.0.0.1:5000")] == [
            "https://127.0.0.1:5000",
            "http://127.0.0.1:5000",
        ]
        assert [e.base for e in s.index_endpoints(client, "10.1.2.3")] == [
            "https://10.1.2.3",
            "http://10.1.2.3",
        ]
        assert [e.base for e in s.index_endpoints(client, "10.2.0.1:443")] == [
            "https://10.2.0.1:443"
        ]
    finally:
        client.close()


# --- the search itself, against the tests' index on 127.0.0.1 -------------------------


@pytest.fixture
def client() -> Iterator[RegistryClient]:
    c = RegistryClient(timeout=10)
    yield c
    c.close()


@pytest.fixture
def index() -> Iterator[SearchIndex]:
    with running_search_index("none") as idx:
        yield idx


def test_search_asks_the_index_once_per_search(client: RegistryClient, index: SearchIndex) -> None:
    found = s.search(client, f"{index.host}/busy", 2, s.SearchOptions(), AuthConfig())
    assert [r.name for r in found] == ["busybox", "berth/busybox-tools"]
    assert not found[1].is_automated  # the catalogue says it is
    s.search(client, f"{index.host}/busy", 2, s.SearchOptions(), AuthConfig())
    # https failed once (the index speaks plain HTTP), then http is tried first
    assert [(r.path, r.query) for r in index.requests] == [
        ("/v1/search", {"q": ["busy"], "n": ["2"]}),
        ("/v1/search", {"q": ["busy"], "n": ["2"]}),
    ]


def test_is_automated_true_asks_nothing(client: RegistryClient, index: SearchIndex) -> None:
    options = s.SearchOptions(automated_only=True)
    assert s.search(client, f"{index.host}/bus", 25, options, AuthConfig()) == []
    assert index.requests == []


def test_basic_credentials(client: RegistryClient) -> None:
    with running_search_index("basic") as idx:
        with pytest.raises(errdefs.Forbidden) as err:
            s.search(client, f"{idx.host}/alpine", 25, s.SearchOptions(), AuthConfig())
        assert "no basic auth credentials" in str(err.value)
        good = AuthConfig(username=idx.username, password=idx.password)
        found = s.search(client, f"{idx.host}/alpine", 25, s.SearchOptions(), good)
        assert [r.name for r in found] == ["alpine"]
        bad = AuthConfig(username=idx.username, password="wrong")
        with pytest.raises(errdefs.Forbidden) as err:
            s.search(client, f"{idx.host}/alpine", 25, s.SearchOptions(), bad)
        assert str(err.value).startswith("unexpected status code 401: ")


def test_an_index_that_is_down(client: RegistryClient) -> None:
    port = free_port()
    with pytest.raises(errdefs.InvalidParameter) as err:
        s.search(client, f"127.0.0.1:{port}/x", 25, s.SearchOptions(), AuthConfig())
    msg = str(err.value)
    assert msg.startswith(
        f'invalid registry endpoint "http://127.0.0.1:{port}/v1/". HTTPS attempt: '
    )
    assert "connection refused. HTTP attempt: " in msg


def test_an_index_without_search_or_failing(client: RegistryClient, index: SearchIndex) -> None:
    index.fail_with = 404
    with pytest.raises(errdefs.System) as err:
        s.search(client, f"{index.host}/x", 25, s.SearchOptions(), AuthConfig())
    assert str(err.value) == (
        f"unexpected status code 404: the registry {index.host} does not offer search "
        "(GET /v1/search)"
    )
    index.fail_with = 502
    with pytest.raises(errdefs.System) as err:
        s.search(client, f"{index.host}/x", 25, s.SearchOptions(), AuthConfig())
    assert str(err.value) == "unexpected status code 502 Bad Gateway"
    index.fail_with = 403
    with pytest.raises(errdefs.Forbidden) as err:
        s.search(client, f"{index.host}/x", 25, s.SearchOptions(), AuthConfig())
    assert str(err.value) == (
        f"unexpected status code 403 Forbidden (log in with 'docker login {index.host}')"
    )
    index.fail_with = None  # and the same index answers again
    found = s.search(client, f"{index.host}/alpine", 25, s.SearchOptions(), AuthConfig())
    assert [r.name for r in found] == ["alpine"]
