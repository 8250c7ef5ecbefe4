"""Errors of the fake Discord: the ones it answers the bot with, and the ones it raises to the test."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


class InvalidCommandInput(ValueError):
    """The test asked for something Discord's client would not let a member send (the option rules forbid it)."""


class DiscordHTTPError(Exception):
    """An error answer in Discord's shape: `{"code": N, "message": "...", "errors": {...}}` with an HTTP status.

    `problem`, when given, says which Discord rule the bot broke; the fake records it in `protocol_errors` as
    "CODE: METHOD PATH: problem" so tests can filter on the code.
    """

    def __init__(
        self,
        status: int,
        code: int,
        message: str,
        *,
        problem: str | None = None,
        errors: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{status} {code} {message}")
        self.status = status
        self.code = code
        self.message = message
        self.problem = problem
        self.errors = errors

    def body(self) -> dict[str, Any]:
        """The JSON body Discord sends."""
        body: dict[str, Any] = {"message": self.message, "code": self.code}
        if self.errors:
            body["errors"] = self.errors
        return body


def field_errors(path: tuple[str | int, ...], code: str, message: str) -> dict[str, Any]:
    """Discord's nested `errors` object for one field, e.g. {"embeds": {"0": {"title": {"_errors": [...]}}}}."""
    node: dict[str, Any] = {"_errors": [{"code": code, "message": message}]}
    for part in reversed(path):
        node = {str(part): node}
    return node


def invalid_form_body(path: tuple[str | int, ...], code: str, message: str, *, problem: str) -> DiscordHTTPError:
    """400 / 50035 Invalid Form Body for one field."""
    return DiscordHTTPError(400, 50035, "Invalid Form Body", problem=problem, errors=field_errors(path, code, message))
