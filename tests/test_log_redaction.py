"""Log lines never carry the bot token, the API key or an interaction's token, whatever logs them."""

from __future__ import annotations

import logging

import pytest

from bot import RedactSecrets

TOKEN = "MTIzNDU2Nzg5MDEyMzQ1Njc4.GaBcDe.bot-token-secret"
API_KEY = "onemin-api-key-secret"
INTERACTION_TOKEN = "aW50ZXJhY3Rpb246MTIzNDU2Nzg5MDpzZWNyZXQ"


def redacted(message: str, *args: object) -> str:
    record = logging.LogRecord("test", logging.ERROR, __file__, 1, message, args or None, None)
    assert RedactSecrets(TOKEN, API_KEY).filter(record)
    return record.getMessage()


@pytest.mark.parametrize(
    "url",
    [
        f"https://discord.com/api/v10/webhooks/1234567890/{INTERACTION_TOKEN}/messages/@original",
        f"https://discord.com/api/v10/webhooks/1234567890/{INTERACTION_TOKEN}?wait=true",
        f"https://discord.com/api/v10/interactions/9876543210/{INTERACTION_TOKEN}/callback",
        f"http://127.0.0.1:8080/api/v10/webhooks/1234567890/{INTERACTION_TOKEN}",
    ],
)
def test_an_interaction_token_in_a_url_is_masked(url: str) -> None:
    # What aiohttp 3.14 says when a connection to Discord times out, traceback folded in as QueueHandler does.
    line = redacted("job 7: could not update the member\nConnectionTimeoutError: Connection timeout to host %s", url)
    assert INTERACTION_TOKEN not in line
    assert "/[redacted]" in line and "could not update the member" in line


def test_the_bot_token_and_api_key_are_masked_and_other_lines_left_alone() -> None:
    assert redacted("login with %s and %s", TOKEN, API_KEY) == "login with [redacted] and [redacted]"
    assert redacted("job %s delivered", 7) == "job 7 delivered"
