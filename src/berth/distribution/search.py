"""``docker search``: a registry index's v1 search API, filtered as dockerd filters it.

dockerd (``registry/search.go``) takes the index from the term (``host:port/name``;
no host means Docker Hub's index), asks ``GET /v1/search?q=<name>&n=<limit>`` there
over https, falling back to http for an insecure registry, and then filters the
answer itself: ``is-official``, ``stars=N`` (the highest N given) and the deprecated
``is-automated`` (``true`` matches nothing, and every result says ``false``).  A
registry without the v1 API (distribution 2.x answers 404) is an error in dockerd's
words, ``unexpected status code 404``, here with what it means.

The HTTP goes through :class:`RegistryClient` (its endpoints, transport and auth).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import quote_plus, urlsplit

import msgspec

from berth import errdefs
from berth.distribution import _errors
from berth.distribution._auth import AuthConfig
from berth.distribution._transport import Response, TransportError
from berth.distribution.registry import Endpoint, RegistryClient
from berth.types.filters import Filters

__all__ = [
    "DEFAULT_LIMIT",
    "SearchOptions",
    "SearchResult",
    "apply",
    "decode_results",
    "parse_limit",
    "parse_options",
    "search",
    "split_term",
]

#: dockerd's ``defaultSearchLimit``: what ``limit`` absent or 0 means
DEFAULT_LIMIT = 25
MAX_LIMIT = 100
#: dockerd's ``acceptedSearchFilterTags``
ACCEPTED_FILTERS = ("is-automated", "is-official", "stars")
#: Docker Hub's index (dockerd's ``IndexServer`` without ``/v1/``): search never uses mirrors
HUB_INDEX = "https://index.docker.io"
HUB_NAME = "docker.io"
#: the token scope dockerd asks for when a search is authorized by a token
SEARCH_SCOPE = "registry:catalog:search"
_MAX_ANSWER = 16 << 20
_GO_INT = re.compile(r"[+-]?[0-9]+")
_INT64 = 1 << 63


class SearchResult(msgspec.Struct, frozen=True):
    """One result, its fields in the order dockerd's ``registry.SearchResult`` has them."""

    star_count: int = 0
    is_official: bool = False
    name: str = ""
    is_automated: bool = False
    description: str = ""


class _Found(msgspec.Struct):
    """A result as a registry sends it: Go's decoder takes null as absent."""

    star_count: int | None = None
    is_official: bool | None = None
    name: str | None = None
    is_automated: bool | None = None
    description: str | None = None


class _Answer(msgspec.Struct):
    """``{"num_results":..,"query":..,"results":[..]}``; only the results matter."""

    results: list[_Found] | None = None


@dataclass(frozen=True)
class SearchOptions:
    """The filters of one search, checked before anything is sent."""

    is_official: bool | None = None  # None: not filtered
    min_stars: int | None = None  # None: not filtered
    automated_only: bool = False  # is-automated=true: nothing can match


def _atoi(raw: str) -> int:
    """Go's ``strconv.Atoi``: an optional sign and ASCII digits, within int64."""
    if not _GO_INT.fullmatch(raw):
        raise ValueError(f'strconv.Atoi: parsing "{raw}": invalid syntax')
    value = int(raw)
    if not -_INT64 <= value < _INT64:
        raise ValueError(f'strconv.Atoi: parsing "{raw}": value out of range')
    return value


def parse_limit(raw: str) -> int:
    """The ``limit`` query argument: absent or 0 is 25; 1..100 is taken as is."""
    if raw == "":
        return DEFAULT_LIMIT
    try:
        limit = _atoi(raw)
    except ValueError as e:
        raise errdefs.InvalidParameter(f"invalid limit specified: {e}") from None
    if limit == 0:
        return DEFAULT_LIMIT
    if not 1 <= limit <= MAX_LIMIT:
        raise errdefs.InvalidParameter(f"limit {limit} is outside the range of [1, {MAX_LIMIT}]")
    return limit


def parse_options(flt: Filters) -> SearchOptions:
    """dockerd's checks, in its order: unknown filters, the two booleans, ``stars``."""
    flt.validate(ACCEPTED_FILTERS)
    automated = flt.get_bool_or_default("is-automated", False)
    official = flt.get_bool_or_default("is-official", False)
    min_stars: int | None = None
    if flt.contains("stars"):
        min_stars = 0
        for raw in flt.get("stars"):
            try:
                stars = _atoi(raw)
            except ValueError as e:
                raise errdefs.InvalidParameter(f"invalid filter 'stars={raw}': {e}") from None
            min_stars = max(min_stars, stars)
    return SearchOptions(
        is_official=official if flt.contains("is-official") else None,
        min_stars=min_stars,
        automated_only=automated,
    )


def split_term(term: str) -> tuple[str, str]:
    """(index name, query): dockerd's ``splitReposSearchTerm``.  The first component is
    a registry only when it looks like a host (a dot, a port, or ``localhost``);
    Docker Hub's ``library/`` prefix is dropped, since its index knows ``foo``."""
    if "://" in term:
        raise errdefs.InvalidParameter(
            f"invalid repository name: repository name ({term}) should not have a scheme"
        )
    first, sep, rest = term.partition("/")
    if not sep or ("." not in first and ":" not in first and first != "localhost"):
        index, name = HUB_NAME, term
    else:
        index, name = first, rest
    if index == "index.docker.io":
        index = HUB_NAME
    if index == HUB_NAME:
        name = name.removeprefix("library/")
    return index, name


def search_path(name: str, limit: int) -> str:
    """The request dockerd sends, query escaped as Go's ``url.QueryEscape``."""
    return f"/v1/search?q={quote_plus(name, safe='')}&n={limit}"


def decode_results(body: bytes) -> list[SearchResult]:
    try:
        answer = msgspec.json.decode(body, type=_Answer)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise errdefs.System(f"error decoding registry search results: {e}") from None
    return [
        SearchResult(
            star_count=r.star_count or 0,
            is_official=bool(r.is_official),
            name=r.name or "",
            is_automated=bool(r.is_automated),
            description=r.description or "",
        )
        for r in answer.results or ()
    ]


def apply(results: list[SearchResult], limit: int, options: SearchOptions) -> list[SearchResult]:
    """At most *limit* of the registry's results (in its order) that pass the filters;
    ``is_automated`` is always false, as dockerd no longer trusts it."""
    if options.automated_only:
        return []
    out = []
    for r in results[:limit]:
        if options.is_official is not None and r.is_official != options.is_official:
            continue
        if options.min_stars is not None and r.star_count < options.min_stars:
            continue
        out.append(msgspec.structs.replace(r, is_automated=False) if r.is_automated else r)
    return out


def index_endpoints(client: RegistryClient, index: str) -> list[Endpoint]:
    """Where *index*'s search is: Docker Hub's index over https only; any other
    registry as the client reaches it (https, then http when it is insecure)."""
    if index == HUB_NAME:
        return [Endpoint(HUB_INDEX)]
    return client.endpoints(index, pull=False)


def search(
    client: RegistryClient,
    term: str,
    limit: int,
    options: SearchOptions,
    auth: AuthConfig,
) -> list[SearchResult]:
    """Search *term*'s index; *limit* and *options* come checked from
    :func:`parse_limit` and :func:`parse_options`."""
    if options.automated_only:
        return []  # before the term is looked at, as dockerd
    index, name = split_term(term)
    eps = index_endpoints(client, index)
    path = search_path(name, limit)
    failed: dict[str, TransportError] = {}
    for ep in eps:
        try:
            resp = client.get_authorized(
                ep, path, auth, scopes=(SEARCH_SCOPE,), headers={"X-Docker-Token": "true"}
            )
        except TransportError as e:
            failed[urlsplit(ep.base).scheme] = e
            continue
        except errdefs.Unauthorized as e:  # no credentials for the challenge, or refused
            raise errdefs.Forbidden(f"{e} ({_login_hint(index)})") from None
        if resp.status != 200:
            raise _status_error(index, resp.status, resp.reason, _read(resp, 1 << 16))
        return apply(decode_results(_read(resp, _MAX_ANSWER)), limit, options)
    raise _endpoint_error(client, index, eps, failed)


def _read(resp: Response, limit: int) -> bytes:
    try:
        return resp.read(limit)
    except errdefs.InvalidParameter:
        raise errdefs.System(
            f"error decoding registry search results: larger than {limit} bytes"
        ) from None


def _status_error(index: str, status: int, reason: str, body: bytes) -> errdefs.BerthError:
    """dockerd's ``unexpected status code N``, with what the registry said or what the
    status means.  401 and 403 are Forbidden, never Unauthorized: on a 401 the CLI
    prompts for a login and, without a terminal, waits for ever (dockerd answers 500)."""
    msg = f"unexpected status code {status}"
    said = _errors.parse_errors(body)
    if said:
        msg += ": " + "; ".join(_errors.code_message(c, m) if c else m for c, m in said)
    elif status in (404, 405, 501):
        msg += f": the registry {index} does not offer search (GET /v1/search)"
    elif status == 401:
        msg += ": authentication required"
    else:
        msg += f" {reason or _phrase(status)}".rstrip()
    if status in (401, 403):
        return errdefs.Forbidden(f"{msg} ({_login_hint(index)})")
    return errdefs.System(msg)


def _login_hint(index: str) -> str:
    command = "docker login" if index == HUB_NAME else f"docker login {index}"
    return f"log in with '{command}'"


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def _endpoint_error(
    client: RegistryClient, index: str, eps: list[Endpoint], failed: dict[str, TransportError]
) -> errdefs.BerthError:
    """dockerd's words for an index that could not be spoken to at all."""
    if index == HUB_NAME:
        return next(iter(failed.values()))
    if len(eps) == 1:
        err = failed["https"]
        certs = client.certs_dir or "/etc/docker/certs.d"
        return errdefs.InvalidParameter(
            f"invalid registry endpoint https://{index}/v1/: {err}. If this private registry "
            "supports only HTTP or HTTPS with an unknown CA certificate, please add "
            f"`--insecure-registry {index}` to the daemon's arguments. In the case of HTTPS, "
            "if you have access to the registry's CA certificate, no need for the flag; "
            f"simply place the CA certificate at {certs}/{index}/ca.crt"
        )
    return errdefs.InvalidParameter(
        f'invalid registry endpoint "http://{index}/v1/". HTTPS attempt: '
        f"{failed.get('https')}. HTTP attempt: {failed.get('http')}"
    )
