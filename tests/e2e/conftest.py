"""Fixtures for end-to-end tests: both fakes on loopback and the real bot process."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.botenv import API_KEY, BOT_TOKEN
from tests.e2e.harness import World
from tests.fakes.discord import FakeDiscord
from tests.fakes.onemin import FakeOneMin
from tests.postgres import fresh_schema, postgres_url


@contextlib.asynccontextmanager
async def running_world(tmp_path: Path, postgres: tuple[str, str] | None = None) -> AsyncIterator[World]:
    """The fakes and one server with members, the bot stopped and checked for leaked secrets at the end."""
    async with FakeDiscord(token=BOT_TOKEN) as discord, FakeOneMin(api_key=API_KEY) as onemin:
        world = World(discord, onemin, tmp_path, postgres=postgres)
        try:
            yield world
        finally:
            if world.bot is not None:
                await world.bot.stop()
                log = world.bot.log()
                assert BOT_TOKEN not in log, "the bot token appeared in the bot's log"
                assert API_KEY not in log, "the API key appeared in the bot's log"
            await world.db.close()
        discord.assert_clean()
        assert onemin.rejected == [], f"the bot sent requests the generator's rules refuse: {onemin.rejected}"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test marked ``each_backend`` runs twice: on a SQLite file, then on a fresh PostgreSQL schema."""
    if metafunc.definition.get_closest_marker("each_backend") and "world" in metafunc.fixturenames:
        metafunc.parametrize("world", ["sqlite", "postgres"], indirect=True)


@pytest.fixture
async def world(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[World]:
    """The fakes, one server with members; the bot is started by the test (``await world.start_bot()``).

    The bot's database is a SQLite file; with ``@pytest.mark.each_backend`` the test also runs on PostgreSQL
    (TEST_DATABASE_URL: skipped without it, failed under CI).
    """
    if getattr(request, "param", "sqlite") == "sqlite":
        async with running_world(tmp_path) as world:
            yield world
        return
    url = postgres_url()
    async with fresh_schema(url) as schema, running_world(tmp_path, (url, schema)) as world:
        yield world
