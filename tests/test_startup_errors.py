"""Which start-up failures are called Discord's: only those of logging in, not the store's inside setup_hook."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import discord
import pytest

import bot
from imaginebot.config import load_settings
from imaginebot.store.sql import SqlStore


def settings(tmp_path: Path) -> object:
    return load_settings(
        {"DISCORD_TOKEN": "t", "ONEMIN_API_KEY": "k", "DATABASE_URL": f"sqlite:///{tmp_path}/imagine.db"}
    )


async def test_discord_never_answering_the_login_is_discord_unreachable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def never_answers(self: object, token: str) -> None:
        raise TimeoutError  # aiohttp's total timeout, with no answer at all

    monkeypatch.setattr(discord.http.HTTPClient, "static_login", never_answers)
    imagine_bot = bot.ImagineBot(settings(tmp_path))  # type: ignore[arg-type]
    try:
        with pytest.raises(bot.DiscordUnreachable, match=r"Discord could not be reached at https://discord\.com/api"):
            await imagine_bot.login("t")
    finally:
        await imagine_bot.close()


async def test_a_store_timeout_during_setup_is_not_called_discords(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def logged_in(self: discord.Client, token: str) -> None:
        await self.setup_hook()  # Discord answered; setup_hook runs inside login

    async def times_out(self: object, key: str) -> None:
        raise TimeoutError  # asyncpg's command timeout

    monkeypatch.setattr(discord.Client, "login", logged_in)
    monkeypatch.setattr(SqlStore, "get_state", times_out)
    imagine_bot = bot.ImagineBot(settings(tmp_path))  # type: ignore[arg-type]
    try:
        with pytest.raises(TimeoutError) as raised:
            await imagine_bot.login("t")
        assert not isinstance(raised.value, bot.DiscordUnreachable)
    finally:
        await imagine_bot.close()


async def test_a_guild_the_bot_cannot_sync_to_is_named_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def logged_in(self: discord.Client, token: str) -> None:
        await self.setup_hook()

    async def refused(self: object, *, guild: object = None) -> None:
        raise discord.Forbidden(
            SimpleNamespace(status=403, reason="Forbidden"), {"code": 50001, "message": "Missing Access"}
        )  # type: ignore[arg-type]

    monkeypatch.setattr(discord.Client, "login", logged_in)
    monkeypatch.setattr(discord.app_commands.CommandTree, "sync", refused)
    imagine_bot = bot.ImagineBot(
        load_settings(
            {
                "DISCORD_TOKEN": "t",
                "ONEMIN_API_KEY": "k",
                "DATABASE_URL": f"sqlite:///{tmp_path}/imagine.db",
                "DISCORD_GUILD_ID": "123456789012345678",
            }
        )
    )
    try:
        with pytest.raises(bot.GuildUnavailable) as raised:
            await imagine_bot.login("t")
    finally:
        await imagine_bot.close()
    message = str(raised.value)
    assert message.startswith("DISCORD_GUILD_ID: ") and "123456789012345678" in message and "Missing Access" in message
    assert len(message.splitlines()) == 1


def test_a_token_discord_refuses_is_a_setting_to_fix_named_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async def refused(imagine_bot: bot.ImagineBot, token: str) -> None:
        await imagine_bot.close()
        raise discord.LoginFailure("Improper token has been passed.")

    monkeypatch.chdir(tmp_path)  # no .env of a developer's
    for name, value in {"DISCORD_TOKEN": "not-a-token", "ONEMIN_API_KEY": "k"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/imagine.db")
    monkeypatch.setattr(bot, "run", refused)
    root, discord_log = logging.getLogger(), logging.getLogger("discord")
    handlers, level, discord_level = root.handlers[:], root.level, discord_log.level
    try:
        assert bot.main() == 2  # a restart policy that honours the exit status does not retry a wrong token
    finally:  # main() set up the process's logging
        root.handlers[:] = handlers
        root.setLevel(level)
        discord_log.setLevel(discord_level)
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("Cannot start: DISCORD_TOKEN: Discord refused the bot token"), lines
    assert "not-a-token" not in "\n".join(lines)
