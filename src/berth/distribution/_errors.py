"""Registry answers → errdefs, worded as dockerd words them.

The distribution spec's error codes (``{"errors":[{"code":...,"message":...}]}``)
say more than the HTTP status does; where a registry sends none, the status
decides.  Messages follow Go's ``errcode.Error``: ``"<code in words>: <message>"``.
"""

from __future__ import annotations

import json
from http import HTTPStatus

from berth import errdefs

#: code → (the spec's default message, the errdefs class it means)
CODES: dict[str, tuple[str, type[errdefs.BerthError]]] = {
    "UNKNOWN": ("unknown error", errdefs.System),
    "UNSUPPORTED": ("The operation is unsupported.", errdefs.NotImplementedFeature),
    "UNAUTHORIZED": ("authentication required", errdefs.Unauthorized),
    "DENIED": ("requested access to the resource is denied", errdefs.Forbidden),
    "UNAVAILABLE": ("service unavailable", errdefs.Unavailable),
    "TOOMANYREQUESTS": ("too many requests", errdefs.Unavailable),
    "BLOB_UNKNOWN": ("blob unknown to registry", errdefs.NotFound),
    "BLOB_UPLOAD_UNKNOWN": ("blob upload unknown to registry", errdefs.NotFound),
    "BLOB_UPLOAD_INVALID": ("blob upload invalid", errdefs.InvalidParameter),
    "DIGEST_INVALID": ("provided digest did not match uploaded content", errdefs.InvalidParameter),
    "MANIFEST_BLOB_UNKNOWN": ("blob unknown to registry", errdefs.InvalidParameter),
    "MANIFEST_INVALID": ("manifest invalid", errdefs.InvalidParameter),
    "MANIFEST_UNKNOWN": ("manifest unknown", errdefs.NotFound),
    "MANIFEST_UNVERIFIED": ("manifest failed signature verification", errdefs.InvalidParameter),
    "NAME_INVALID": ("invalid repository name", errdefs.InvalidParameter),
    "NAME_UNKNOWN": ("repository name not known to registry", errdefs.NotFound),
    "SIZE_INVALID": ("provided length did not match content length", errdefs.InvalidParameter),
    "TAG_INVALID": ("manifest tag did not match URI", errdefs.InvalidParameter),
    "PAGINATION_NUMBER_INVALID": ("invalid number of results requested", errdefs.InvalidParameter),
    "RANGE_INVALID": ("invalid content range", errdefs.InvalidParameter),
}

_BY_STATUS: dict[int, type[errdefs.BerthError]] = {
    400: errdefs.InvalidParameter,
    401: errdefs.Unauthorized,
    403: errdefs.Forbidden,
    404: errdefs.NotFound,
    405: errdefs.NotImplementedFeature,
    409: errdefs.Conflict,
    416: errdefs.InvalidParameter,
    429: errdefs.Unavailable,
}


#: RFC 6750 ``error`` values of a Bearer challenge, as distribution's client reads them
_BEARER_ERRORS = {"insufficient_scope": "DENIED", "invalid_token": "UNAUTHORIZED"}


class _Registry:
    """What a registry said: the first error code (``""`` for none) and the status."""

    code: str = ""
    status: int = 0
    first: str = ""  # the first error alone, as dockerd's pull words it


# One subclass per errdefs class, so callers can both ``except errdefs.NotFound``
# and read the registry's code (pull needs MANIFEST_UNKNOWN vs DENIED).
class RegistryNotFound(_Registry, errdefs.NotFound):
    pass


class RegistryInvalid(_Registry, errdefs.InvalidParameter):
    pass


class RegistryUnauthorized(_Registry, errdefs.Unauthorized):
    pass


class RegistryForbidden(_Registry, errdefs.Forbidden):
    pass


class RegistryUnavailable(_Registry, errdefs.Unavailable):
    pass


class RegistryConflict(_Registry, errdefs.Conflict):
    pass


class RegistryUnsupported(_Registry, errdefs.NotImplementedFeature):
    pass


class RegistrySystem(_Registry, errdefs.System):
    pass


_SUBCLASS: dict[type[errdefs.BerthError], type[errdefs.BerthError]] = {
    errdefs.NotFound: RegistryNotFound,
    errdefs.InvalidParameter: RegistryInvalid,
    errdefs.Unauthorized: RegistryUnauthorized,
    errdefs.Forbidden: RegistryForbidden,
    errdefs.Unavailable: RegistryUnavailable,
    errdefs.Conflict: RegistryConflict,
    errdefs.NotImplementedFeature: RegistryUnsupported,
    errdefs.System: RegistrySystem,
}


def make(
    kind: type[errdefs.BerthError],
    message: str,
    code: str = "",
    status: int = 0,
    first: str = "",
) -> errdefs.BerthError:
    """An error of errdefs class *kind* that remembers the registry's code and status."""
    err = _SUBCLASS.get(kind, RegistrySystem)(message)
    assert isinstance(err, _Registry)
    err.code, err.status, err.first = code, status, first or message
    return err


def code_of(err: BaseException) -> str:
    return err.code if isinstance(err, _Registry) else ""


def code_message(code: str, message: str) -> str:
    """Go's ``errcode.Error.Error()``: ``manifest unknown: manifest unknown``."""
    return f"{code.lower().replace('_', ' ')}: {message}"


def parse_errors(body: bytes) -> list[tuple[str, str]]:
    """The (code, message) pairs of an errors body; ``[]`` when it has none."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return []
    if not isinstance(doc, dict):
        return []
    details = doc.get("details")
    if isinstance(details, str) and details:  # old token servers: {"details": "..."}
        return [("", details)]
    out = []
    for e in doc.get("errors") or ():
        if isinstance(e, dict) and isinstance(e.get("code"), str):
            code = e["code"].upper()
            msg = e.get("message")
            if not isinstance(msg, str) or not msg:
                msg = CODES.get(code, ("unknown error", errdefs.System))[0]
            out.append((code, msg))
    return out


def from_response(
    status: int, body: bytes, *, bearer_error: tuple[str, str] | None = None
) -> errdefs.BerthError:
    """The error a non-2xx answer means.

    *bearer_error* is the RFC 6750 ``error``/``error_description`` of a Bearer
    challenge: ``insufficient_scope`` is DENIED and ``invalid_token`` UNAUTHORIZED,
    as distribution's client reads them before the body.
    """
    pairs = parse_errors(body)
    if pairs and pairs[0][0] == "":  # {"details": ...}
        code = {401: "UNAUTHORIZED", 429: "TOOMANYREQUESTS"}.get(status, "UNKNOWN")
        pairs = [(code, pairs[0][1])]
    if bearer_error is not None:
        bearer = _BEARER_ERRORS.get(bearer_error[0], "")
        if bearer:
            pairs = [(bearer, bearer_error[1] or CODES[bearer][0]), *pairs]
    if not pairs:
        reason = _reason(status)
        if status == 401:
            pairs = [("UNAUTHORIZED", CODES["UNAUTHORIZED"][0])]
        else:
            kind = _BY_STATUS.get(status) or (
                errdefs.Unavailable if status >= 500 else errdefs.System
            )
            return make(kind, f"received unexpected HTTP status: {status} {reason}", "", status)
    pairs = list(dict.fromkeys(pairs))  # a challenge's error is often the body's too
    code, msg = pairs[0]
    kind = CODES.get(code, ("", errdefs.System))[1]
    if status == 429 or status >= 500:
        kind = errdefs.Unavailable
    elif code in ("UNKNOWN", "") or code not in CODES:
        kind = _BY_STATUS.get(status, errdefs.System)
    if len(pairs) == 1:
        text = code_message(code, msg)
    else:
        text = "errors:\n" + "".join(code_message(c, m) + "\n" for c, m in pairs)
    return make(kind, text, code, status, code_message(code, msg))


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""
