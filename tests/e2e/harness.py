"""Runs the real bot (``python bot.py``) against the fake Discord and the fake 1min.ai, as an operator would."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import signal
import sqlite3
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import discord as discordpy

from tests.botenv import REPO, bot_environment
from tests.fakes.discord import FakeDiscord, FakeInteraction, FakeMessage
from tests.fakes.discord.interactions import walk_components
from tests.fakes.onemin import FakeOneMin

MODERATOR_PERMISSIONS = discordpy.Permissions(
    view_channel=True, send_messages=True, read_message_history=True, use_application_commands=True, manage_guild=True
).value


class BotProcess:
    """One ``python bot.py`` process; its log goes to a file the test can read."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        """Start the process (the caller waits for the fake Discord to see it)."""
        log = self.log_path.open("ab")
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "bot.py", cwd=REPO, env=self.env, stdout=log, stderr=log
        )
        log.close()

    async def kill(self) -> None:
        """SIGKILL: a crash, no clean-up at all."""
        if self.process and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()

    async def stop(self) -> None:
        """A polite stop, then a kill if it lingers."""
        if self.process and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 10)
            except TimeoutError:
                await self.kill()

    def log(self) -> str:
        """Everything the bot has logged so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class BotDatabase:
    """The bot's database read from outside, as a test checks it: a SQLite file, or a PostgreSQL schema."""

    def __init__(self, sqlite_path: Path, postgres: tuple[str, str] | None = None) -> None:
        self.sqlite_path = sqlite_path
        self.postgres = postgres  # (server URL, schema)
        self._connection: asyncpg.Connection | None = None

    @property
    def url(self) -> str:
        """The bot's DATABASE_URL for this database."""
        if self.postgres is None:
            return f"sqlite:///{self.sqlite_path}"
        url, schema = self.postgres
        return f"{url}{'&' if '?' in url else '?'}search_path={schema}"

    async def rows(self, sql: str) -> list[dict[str, Any]]:
        """The rows of a query without parameters (the same SQL must read alike on both backends)."""
        if self.postgres is None:
            with contextlib.closing(sqlite3.connect(f"file:{self.sqlite_path}?mode=ro", uri=True)) as db:
                db.row_factory = sqlite3.Row
                return [dict(row) for row in db.execute(sql)]
        if self._connection is None:
            url, schema = self.postgres
            self._connection = await asyncpg.connect(url, server_settings={"search_path": schema})
        return [dict(row) for row in await self._connection.fetch(sql)]

    async def close(self) -> None:
        """Close the PostgreSQL connection, if one was opened."""
        if self._connection is not None:
            await self._connection.close()
            self._connection = None


class World:
    """A fake Discord with one server, a fake 1min.ai, and the bot connected to both."""

    def __init__(
        self, discord: FakeDiscord, onemin: FakeOneMin, tmp_path: Path, *, postgres: tuple[str, str] | None = None
    ) -> None:
        self.discord = discord
        self.onemin = onemin
        self.tmp_path = tmp_path
        self.guild = discord.add_guild(name="Test Server")
        self.channel = discord.add_channel(self.guild, name="art")
        self.member = discord.add_member(self.guild, username="alice")
        self.other = discord.add_member(self.guild, username="bob")
        self.moderator = discord.add_member(self.guild, username="mod", permissions=MODERATOR_PERMISSIONS)
        self.bot: BotProcess | None = None
        self.database = tmp_path / "imagine.db"
        self.db = BotDatabase(self.database, postgres)

    def env(self, **overrides: str) -> dict[str, str]:
        """The bot's environment: pointed at the fakes, with a fresh database (in the test's folder, or the
        PostgreSQL schema the world was given)."""
        return bot_environment(
            self.discord,
            self.onemin,
            self.database,
            **{"DISCORD_GUILD_ID": str(self.guild.id), "DATABASE_URL": self.db.url, **overrides},
        )

    async def start_bot(self, **overrides: str) -> BotProcess:
        """Start ``python bot.py`` and wait until it is connected and its commands are synced."""
        self.bot = BotProcess(self.env(**overrides), self.tmp_path / "bot.log")
        await self.bot.start()
        try:
            await self.discord.wait_until_ready(timeout=30)
            await self.discord.wait_for_commands(timeout=30)
        except Exception as error:
            raise AssertionError(f"the bot did not come up:\n{self.bot.log()}") from error
        return self.bot

    async def restart_bot(self, *, crash: bool = True, **overrides: str) -> BotProcess:
        """Kill the bot (a crash) or stop it, then start it again on the same database."""
        assert self.bot is not None
        if crash:
            await self.bot.kill()
        else:
            await self.bot.stop()
        await self.discord.disconnect_bot()
        env = self.bot.env | overrides
        self.bot = BotProcess(env, self.tmp_path / "bot.log")
        await self.bot.start()
        await self.discord.wait_until_ready(timeout=30)
        return self.bot

    async def imagine(self, member: Any = None, **options: Any) -> FakeInteraction:
        """``/imagine`` as a member types it."""
        return await self.discord.invoke(member or self.member, self.channel, "imagine", options=options)

    async def quota_me(self, member: Any = None) -> str:
        """The text of ``/quota me`` for a member."""
        interaction = await self.discord.invoke(member or self.member, self.channel, "quota", subcommand="me")
        await interaction.wait_for(lambda i: bool(i.messages), timeout=10)
        return interaction.messages[0].content


async def wait_until(
    predicate: Callable[[], bool | Awaitable[bool]], timeout: float = 30, what: str = "condition"
) -> None:
    """Poll ``predicate`` (a plain or an async function) until it holds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await _holds(predicate):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def _holds(predicate: Callable[[], bool | Awaitable[bool]]) -> bool:
    result = predicate()
    return bool(await result) if inspect.isawaitable(result) else bool(result)


@contextlib.contextmanager
def database_locked(world: World) -> Iterator[None]:
    """Another writer holds the bot's SQLite database (the bot waits up to its busy timeout, 5 s)."""
    with contextlib.closing(sqlite3.connect(world.database, isolation_level=None)) as db:
        db.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            db.execute("COMMIT")


async def job_state(world: World, interaction: FakeInteraction) -> str | None:
    """The state the bot's job table gives the job of ``interaction`` (None before it is written)."""
    rows = await world.db.rows(f"SELECT state FROM jobs WHERE interaction_id = {int(interaction.id)}")
    return str(rows[0]["state"]) if rows else None


def job_is(world: World, interaction: FakeInteraction, state: str) -> Callable[[], Awaitable[bool]]:
    """A predicate for ``wait_until``: the job of ``interaction`` is in ``state``."""

    async def check() -> bool:
        return await job_state(world, interaction) == state

    return check


def button_id(message: FakeMessage | None, label: str) -> str:
    """The custom_id of the button labelled ``label`` on a message."""
    assert message is not None, "no message"
    for component in walk_components(message.components):
        if component.get("type") == 2 and component.get("label") == label:
            return str(component["custom_id"])
    raise AssertionError(f"no {label!r} button on message {message.id}: {message.components}")


def has_attachments(count: int) -> Callable[[FakeInteraction], bool]:
    """The interaction's messages carry ``count`` attachments in all."""
    return lambda interaction: sum(len(m.attachments) for m in interaction.messages) >= count


def content_of(interaction: FakeInteraction) -> str:
    """All text the bot showed on an interaction: message contents and embed descriptions/fields."""
    parts: list[str] = []
    for message in interaction.messages:
        parts.append(message.content or "")
        for embed in message.embeds:
            parts.append(embed.get("title") or "")
            parts.append(embed.get("description") or "")
            parts.extend(f"{field['name']}: {field['value']}" for field in embed.get("fields", []))
            parts.append((embed.get("footer") or {}).get("text") or "")
    return "\n".join(parts)


def all_messages(interaction: FakeInteraction) -> list[FakeMessage]:
    """The interaction's messages (original response first)."""
    return list(interaction.messages)
