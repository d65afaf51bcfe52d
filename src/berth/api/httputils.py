"""Form and body helpers shared by the handlers, with the Engine's parsing rules."""

from __future__ import annotations

import functools
from typing import Any, TypeVar

import msgspec

from berth import errdefs
from berth.api._http import Request, Response
from berth.types.filters import Filters

T = TypeVar("T")

_encoder = msgspec.json.Encoder()
_FALSE = {"", "0", "no", "false", "none"}


def query(req: Request, name: str, default: str = "") -> str:
    values = req.query.get(name)
    return values[0] if values else default


def query_all(req: Request, name: str) -> list[str]:
    return req.query.get(name, [])


def bool_value(req: Request, name: str) -> bool:
    """moby's ``BoolValue``: "", 0, no, false and none are false, anything else true."""
    return query(req, name).strip().lower() not in _FALSE


def bool_value_or_default(req: Request, name: str, default: bool) -> bool:
    if name not in req.query:
        return default
    return bool_value(req, name)


def int_value(req: Request, name: str, default: int | None = None) -> int | None:
    raw = query(req, name).strip()
    if raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise errdefs.InvalidParameter(
            f"invalid value for {name}: {raw!r} is not an integer"
        ) from None


def filters(req: Request) -> Filters:
    return Filters.from_param(query(req, "filters"))


def strip_nulls(value: Any) -> Any:
    """Drop ``null`` members of JSON objects: Go treats null exactly like absent."""
    if isinstance(value, dict):
        return {k: strip_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [strip_nulls(v) for v in value]
    return value


def check_json_content_type(req: Request) -> None:
    ctype = req.headers.get("content-type", "")
    if ctype:
        mime = ctype.split(";", 1)[0].strip().lower()
        if mime != "application/json":
            raise errdefs.InvalidParameter(
                f"unsupported Content-Type header ({ctype}): must be 'application/json'"
            )


@functools.cache
def _field_names(typ: type[msgspec.Struct]) -> dict[str, str]:
    return {f.encode_name.lower(): f.encode_name for f in msgspec.structs.fields(typ)}


def fold_field_names(data: Any, typ: type[Any]) -> Any:
    """Give the members of a JSON object the names of *typ*'s fields, matched without
    regard to case as Go's encoding/json does: docker-py sends ``detachKeys``."""
    if (
        not isinstance(data, dict)
        or not isinstance(typ, type)
        or not issubclass(typ, msgspec.Struct)
    ):
        return data
    names = _field_names(typ)
    return {names.get(k.lower(), k) if isinstance(k, str) else k: v for k, v in data.items()}


async def read_json(req: Request, typ: type[T], *, required: bool = False) -> T | None:
    """Decode the body into *typ*, its members named without regard to case as dockerd
    reads them; None for an empty body unless *required*."""
    raw = await req.body()
    if not raw.strip():
        if required:
            raise errdefs.InvalidParameter("invalid JSON: request body is empty")
        return None
    check_json_content_type(req)
    try:
        data = msgspec.json.decode(raw)
    except msgspec.DecodeError as e:
        raise errdefs.InvalidParameter(f"invalid JSON: {e}") from None
    return convert(fold_field_names(data, typ), typ)


def convert(data: Any, typ: type[T]) -> T:
    try:
        return msgspec.convert(strip_nulls(data), typ)
    except msgspec.ValidationError as e:
        raise errdefs.InvalidParameter(f"invalid JSON: {_field_message(e)}") from None


def _field_message(e: msgspec.ValidationError) -> str:
    # msgspec says "Expected `str`, got `int` - at `$.Config.Env[0]`"; name the field plainly.
    text = str(e)
    msg, sep, where = text.partition(" - at `")
    if sep:
        path = where.rstrip("`").removeprefix("$").lstrip(".")
        return f"{msg} for field {path}" if path else msg
    return text


def encode(obj: Any) -> bytes:
    return _encoder.encode(obj)


def json_response(obj: Any, status: int = 200) -> Response:
    return Response(
        status=status, body=_encoder.encode(obj) + b"\n", content_type="application/json"
    )


def no_content() -> Response:
    return Response(status=204)
