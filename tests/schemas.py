"""The engines' published schemas, read in strict mode (unknown fields are errors).

Found through ``$TASKYARD_SCHEMAS`` or the ``shared/schemas`` folder beside the repository (CI
always has one). None of the published schemas closes its objects, so a misspelled field would
pass; :func:`strict_validator` closes every object schema that lists ``properties`` -- what
``kubeconform -strict`` or the API server's strict field validation do -- except where the
schema itself says unknown fields are kept (``x-kubernetes-preserve-unknown-fields``).
"""

from __future__ import annotations

import copy
import json
import os
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft7Validator

ROOT = Path(__file__).resolve().parents[1]


def schemas_dir() -> Path | None:
    env = os.environ.get("TASKYARD_SCHEMAS")
    path = Path(env) if env else ROOT.parent / "shared" / "schemas"
    return path if path.is_dir() else None


def schema_path(relative: str) -> Path:
    """The schema file, or skip the test with the reason (a fresh clone has no schemas)."""
    base = schemas_dir()
    if base is None:
        pytest.skip("engine schemas not found: set TASKYARD_SCHEMAS or put shared/schemas beside")
    path = base / relative
    if not path.is_file():
        pytest.skip(f"schema {relative} not found under {base}")
    return path


# The keywords whose values are schemas (dicts of schemas, lists of schemas, or one schema).
_SCHEMA_MAPS = ("properties", "patternProperties", "definitions", "$defs")
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf")
_SCHEMA_ONE = ("items", "additionalProperties", "not", "additionalItems")


def close(schema: Any) -> Any:
    """A copy of ``schema`` in which every object schema listing ``properties`` is closed."""
    schema = copy.deepcopy(schema)
    _close(schema)
    return schema


def _close(node: Any) -> None:
    if not isinstance(node, dict):
        return
    if (
        "properties" in node
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        node["additionalProperties"] = False
    for key in _SCHEMA_MAPS:
        for sub in (node.get(key) or {}).values():
            _close(sub)
    for key in _SCHEMA_LISTS:
        for sub in node.get(key) or []:
            _close(sub)
    for key in _SCHEMA_ONE:
        sub = node.get(key)
        if isinstance(sub, dict):
            _close(sub)
        elif isinstance(sub, list):  # draft-04 style tuple items
            for item in sub:
                _close(item)


@cache
def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _root(path: Path, definition: str | None) -> dict[str, Any]:
    raw = _load(path)
    if definition is None:
        return raw
    if definition not in raw.get("definitions", {}):
        raise KeyError(f"{path.name} has no definition {definition!r}")
    return {"$ref": f"#/definitions/{definition}", "definitions": raw["definitions"]}


@cache
def strict_validator(schema_path: Path, definition: str | None = None) -> Draft7Validator:
    """A validator for the schema file (or one of its ``definitions``), with objects closed."""
    return Draft7Validator(close(_root(schema_path, definition)))


@cache
def plain_validator(schema_path: Path, definition: str | None = None) -> Draft7Validator:
    """The schema as published (open objects): what strict mode is compared against."""
    return Draft7Validator(_root(schema_path, definition))


def errors(validator: Draft7Validator, doc: Any) -> list[str]:
    """Every violation as ``path: message``, sorted, so a failing assert reads at a glance."""
    out = []
    for e in validator.iter_errors(doc):
        where = ".".join(str(p) for p in e.absolute_path) or "<root>"
        out.append(f"{where}: {e.message}")
    return sorted(out)
