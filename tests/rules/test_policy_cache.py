"""The policy's cache of a server's settings never keeps what a moderator has just changed."""

from __future__ import annotations

import asyncio

from imaginebot.limits import Limit
from imaginebot.policy import Policy
from imaginebot.store import GuildSettings


class SlowStore:
    """A store whose read takes a while, as a pooled PostgreSQL connection's can: it returns the row it read first."""

    def __init__(self) -> None:
        self.row = GuildSettings(1)
        self.limits: dict[int, Limit] = {}

    async def get_guild_settings(self, guild_id: int) -> GuildSettings:
        snapshot = self.row
        await asyncio.sleep(0.05)
        return snapshot

    async def member_limits(self, guild_id: int) -> dict[int, Limit]:
        snapshot = dict(self.limits)
        await asyncio.sleep(0.05)
        return snapshot


async def test_a_read_that_began_before_a_change_is_not_cached_after_it() -> None:
    store = SlowStore()
    policy = Policy(store, bot_default=Limit(1000, "day"), global_budget=None)  # type: ignore[arg-type]
    reading = asyncio.create_task(policy.settings(1))  # an /imagine with a cold cache
    limits = asyncio.create_task(policy.member_limit(1, 7))
    await asyncio.sleep(0.01)
    store.row = GuildSettings(1, blocked_words=("kraken",))  # /settings block kraken, committed elsewhere
    store.limits = {7: Limit(100, "day")}
    policy.forget(1)
    assert (await reading).blocked_words == ()  # that request saw the old row: fine, it began before
    assert await limits is None
    assert (await policy.settings(1)).blocked_words == ("kraken",)  # but the next one sees the change
    assert await policy.member_limit(1, 7) == Limit(100, "day")
