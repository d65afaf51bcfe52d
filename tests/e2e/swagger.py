"""Responses checked against moby's own API description: ``api/swagger.yaml`` of the
version the request asked for, vendored under ``tests/e2e/data/swagger`` (see its README).

The description is Swagger 2.0, whose schemas are those of OpenAPI 3.0 but for
``x-nullable``; each response schema is checked with the ``definitions`` it refers to by
openapi-schema-validator.  Every value may be null: dockerd (Go) writes a nil slice, map
or pointer as ``null`` whatever the description says, and berth answers as dockerd does;
the types of the values that are there, and the fields required, are what is checked.
Enumerations are not: dockerd answers values its description does not list ("no" for a
restart policy, "" for Linux's isolation), and berth answers what dockerd answers.
Errata of a version's description (fixed in a later one) are corrected in ``_ERRATA``.
"""

from __future__ import annotations

import copy
import functools
import lzma
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from openapi_schema_validator import OAS30Validator

SPEC_DIR = Path(__file__).resolve().parent / "data" / "swagger"
VERSIONS = tuple(
    sorted(
        (p.name[1:].removesuffix(".yaml.xz") for p in SPEC_DIR.glob("v*.yaml.xz")),
        key=lambda v: tuple(int(n) for n in v.split(".")),
    )
)


@functools.cache
def spec(version: str) -> dict[str, Any]:
    with lzma.open(SPEC_DIR / f"v{version}.yaml.xz", "rt", encoding="utf-8") as f:
        loaded: dict[str, Any] = yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    for fix in _ERRATA.get(version, ()):
        fix(loaded)
    return loaded


def _df_containers_are_summaries(doc: dict[str, Any]) -> None:
    """v1.41's ContainerSummary is the list ``/containers/json`` answers, and
    ``/system/df`` takes it for one container (an array of arrays; fixed in v1.42)."""
    containers = doc["paths"]["/system/df"]["get"]["responses"][200]["schema"]["properties"]
    containers["Containers"]["items"] = doc["definitions"]["ContainerSummary"]["items"]


_ERRATA: dict[str, tuple[Callable[[dict[str, Any]], None], ...]] = {
    "1.41": (_df_containers_are_summaries,),
}


def _nullable(node: Any) -> Any:
    if isinstance(node, dict):
        out = {k: _nullable(v) for k, v in node.items() if k not in ("x-nullable", "enum")}
        if "type" in node:
            out["nullable"] = True
        return out
    if isinstance(node, list):
        return [_nullable(v) for v in node]
    return node


@functools.cache
def _definitions(version: str) -> dict[str, Any]:
    defs: dict[str, Any] = _nullable(spec(version)["definitions"])
    return defs


def response_schema(version: str, method: str, template: str, status: int) -> dict[str, Any]:
    """The schema of the answer *status* of the operation at *template* (a path of the
    description, e.g. ``/containers/{id}/json``)."""
    operation = spec(version)["paths"][template][method.lower()]
    responses = operation["responses"]
    response = responses.get(status) or responses[str(status)]  # YAML keys are numbers
    schema: dict[str, Any] = response["schema"]
    return schema


def check(version: str, method: str, template: str, status: int, body: Any) -> None:
    """Raise (jsonschema's ValidationError, naming the field) unless *body* fits."""
    root = _nullable(copy.deepcopy(response_schema(version, method, template, status)))
    root["definitions"] = _definitions(version)
    OAS30Validator(root).validate(body)
