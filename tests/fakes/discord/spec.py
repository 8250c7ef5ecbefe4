"""Validation of request bodies against Discord's official OpenAPI description (vendored under tests/spec/)."""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

log = logging.getLogger(__name__)

SPEC_PATH = Path(__file__).resolve().parents[2] / "spec" / "discord-api-spec" / "openapi.json"

# Discord sends and accepts snowflakes as integers too; the description types them as strings only.
_SNOWFLAKE = {"type": ["string", "integer"], "pattern": r"^(0|[1-9][0-9]*)$", "minimum": 0, "format": "snowflake"}


@dataclass(frozen=True)
class SpecError:
    """One reason the spec rejected a body: where (a JSON path) and why."""

    path: tuple[str | int, ...]
    message: str

    def __str__(self) -> str:
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in self.path).lstrip(".") or "<body>"
        return f"{where}: {self.message}"


@functools.cache
def _document() -> dict[str, Any]:
    """The vendored description, loaded once per process, with snowflakes widened."""
    with SPEC_PATH.open("rb") as f:
        document = json.load(f)
    document["components"]["schemas"]["SnowflakeType"] = _SNOWFLAKE
    return document


class SpecValidator:
    """Validates JSON request bodies against the requestBody schema of a path and method of the description.

    Validators are built on first use per (path, method) and cached: the description is large and bots send
    hundreds of requests in a benchmark.
    """

    def __init__(self) -> None:
        self._validators: dict[tuple[str, str], Draft202012Validator | None] = {}

    def validate(self, path: str, method: str, body: Any) -> list[SpecError]:
        """Return why `body` breaks the schema for `method path` (a template such as `/channels/{channel_id}/messages`).

        An empty list means the body is valid, or the description has no JSON request body for that route.
        """
        validator = self._validator(path, method.lower())
        if validator is None:
            return []
        errors = list(validator.iter_errors(body))
        return [_explain(error) for error in errors]

    def _validator(self, path: str, method: str) -> Draft202012Validator | None:
        key = (path, method)
        if key not in self._validators:
            self._validators[key] = _build_validator(path, method)
        return self._validators[key]


def _build_validator(path: str, method: str) -> Draft202012Validator | None:
    document = _document()
    try:
        operation = document["paths"][path][method]
    except KeyError:
        raise KeyError(f"the Discord API description has no {method.upper()} {path}") from None
    content = operation.get("requestBody", {}).get("content", {})
    schema = content.get("application/json", {}).get("schema")
    if schema is None:
        return None
    # The route's schema refers to "#/components/...": give it the document's components as its own so that
    # local references resolve without copying the 1 MB description per route.
    root = {**schema, "components": document["components"]}
    return Draft202012Validator(root)


def _explain(error: ValidationError) -> SpecError:
    """Reduce an error to its most specific cause, following the union member the body was aiming at."""
    leaf = _deepest(error)
    message = leaf.message if len(leaf.message) <= 300 else leaf.message[:297] + "..."
    return SpecError(tuple(leaf.absolute_path), message)


def _deepest(error: ValidationError) -> ValidationError:
    if not error.context:
        return error
    # anyOf/oneOf: drop the branches whose `type` tag differs from the body's (noise, not the reason), then
    # blame the branch that got furthest into the body: it is the one the sender meant.
    branches: dict[Any, list[ValidationError]] = {}
    for sub in error.context:
        branches.setdefault(sub.schema_path[0] if sub.schema_path else None, []).append(sub)
    meant = [subs for subs in branches.values() if not any(_is_type_tag_error(e) for e in subs)]
    candidates = [_deepest(e) for subs in meant for e in subs]
    if not candidates:
        return error
    return max(candidates, key=lambda e: len(e.absolute_path))


def _is_type_tag_error(error: ValidationError) -> bool:
    return error.validator in ("enum", "const") and list(error.relative_path) == ["type"]
