"""Starting the bot: a missing or bad setting stops it at once, naming the variable, without leaking secrets."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.botenv import CONTRACT_VARIABLES, REPO


def run_bot(**env: str) -> subprocess.CompletedProcess[str]:
    clean = {key: value for key, value in os.environ.items() if key not in CONTRACT_VARIABLES}
    clean.update({key: "" for key in CONTRACT_VARIABLES})  # empty = unset, and wins over any .env
    clean.update(env)
    return subprocess.run(
        [sys.executable, "bot.py"], cwd=REPO, env=clean, capture_output=True, text=True, timeout=60, check=False
    )


def test_missing_token_is_named() -> None:
    result = run_bot(ONEMIN_API_KEY="secret-key")
    assert result.returncode != 0
    assert "DISCORD_TOKEN" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "secret-key" not in result.stderr + result.stdout


def test_missing_api_key_is_named() -> None:
    result = run_bot(DISCORD_TOKEN="secret-token")
    assert result.returncode != 0
    assert "ONEMIN_API_KEY" in result.stderr
    assert "secret-token" not in result.stderr + result.stdout


@pytest.mark.parametrize(("variable", "value"), [("MAX_CONCURRENT_JOBS", "zero"), ("DATABASE_URL", "oracle://db")])
def test_bad_value_is_named(variable: str, value: str) -> None:
    result = run_bot(DISCORD_TOKEN="t", ONEMIN_API_KEY="k", **{variable: value})
    assert result.returncode != 0
    assert variable in result.stderr


def test_uvloop_runs_the_bot_where_it_is_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    import uvloop

    import bot

    assert bot.event_loop_factory() is uvloop.new_event_loop
    monkeypatch.setitem(sys.modules, "uvloop", None)  # as on Windows, where it is not installed
    assert bot.event_loop_factory() is None
