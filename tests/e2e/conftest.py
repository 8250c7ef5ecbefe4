"""Fixtures for end-to-end tests: both fakes on loopback and the real bot process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.botenv import API_KEY, BOT_TOKEN
from tests.e2e.harness import World
from tests.fakes.discord import FakeDiscord
from tests.fakes.onemin import FakeOneMin


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    """The fakes, one server with members; the bot is started by the test (``await world.start_bot()``)."""
    async with FakeDiscord(token=BOT_TOKEN) as discord, FakeOneMin(api_key=API_KEY) as onemin:
        world = World(discord, onemin, tmp_path)
        try:
            yield world
        finally:
            if world.bot is not None:
                await world.bot.stop()
                log = world.bot.log()
                assert BOT_TOKEN not in log, "the bot token appeared in the bot's log"
                assert API_KEY not in log, "the API key appeared in the bot's log"
        discord.assert_clean()
        assert onemin.rejected == [], f"the bot sent requests the generator's rules refuse: {onemin.rejected}"
