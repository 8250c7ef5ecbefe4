"""The per-day usage totals that reservations read always agree with the ledger, and are rebuilt from it."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import datetime, timedelta

from imaginebot.periods import period_bounds
from imaginebot.store import NewJob, Reserved, Store
from tests.store.conftest import GUILD, MOD, NOW, OTHER_GUILD, OTHER_USER, USER, StoreFactory, run_around_the_store

GUILDS = (GUILD, OTHER_GUILD)
USERS = (USER, OTHER_USER)
PERIODS = ("day", "week", "month")


async def busy_weeks(store: Store, new_job: Callable[..., NewJob], seed: int) -> None:
    """Five weeks of reservations, deliveries, failures, cancels, restarts and resets in two servers."""
    rng = random.Random(seed)
    open_jobs: list[int] = []
    for step in range(120):
        now = NOW - timedelta(days=35) + timedelta(hours=7 * step)
        action = rng.random()
        if action < 0.55 or not open_jobs:
            guild, user = rng.choice(GUILDS), rng.choice(USERS)
            result = await store.reserve(
                new_job(guild_id=guild, user_id=user, cost=rng.randrange(25, 400)),
                [],
                now=now,
                start=rng.random() < 0.5,
            )
            assert isinstance(result, Reserved)
            open_jobs.append(result.job.id)
        elif action < 0.75:
            await store.mark_running(open_jobs[0], now=now)
            await store.mark_delivered(open_jobs.pop(0), result_channel_id=1, result_message_id=2, now=now)
        elif action < 0.9:
            state = rng.choice(["failed", "cancelled"])
            await store.fail_job(open_jobs.pop(rng.randrange(len(open_jobs))), state=state, error="x", now=now)
        elif action < 0.95:
            await store.interrupt_running_jobs(error="restart", now=now)
        else:
            period = rng.choice(PERIODS)
            await store.reset_member_usage(rng.choice(GUILDS), rng.choice(USERS), period, actor_id=MOD, now=now)  # type: ignore[arg-type]


async def usage_table(store: Store) -> dict[tuple[str, int, int | None, str, datetime], int]:
    """Every scope's usage in every period of the last five weeks, as the store reports it."""
    table = {}
    for days_ago in range(0, 36, 3):
        moment = NOW - timedelta(days=days_ago)
        for period in PERIODS:
            key = (period, moment)
            table[("global", 0, None, *key)] = await store.usage(
                guild_id=GUILD, user_id=None, period=period, now=moment, scope="global"
            )
            for guild in GUILDS:
                table[("server", guild, None, *key)] = await store.usage(
                    guild_id=guild, user_id=None, period=period, now=moment, scope="server"
                )
                for user in USERS:
                    table[("member", guild, user, *key)] = await store.usage(
                        guild_id=guild, user_id=user, period=period, now=moment
                    )
    return table


async def ledger_table(store: Store) -> dict[tuple[str, int, int | None, str, datetime], int]:
    """The same figures summed from the ledger itself."""
    table = {}
    for days_ago in range(0, 36, 3):
        moment = NOW - timedelta(days=days_ago)
        for period in PERIODS:
            since, until = period_bounds(period, moment)  # type: ignore[arg-type]
            entries = {guild: await store.ledger(guild_id=guild, since=since, until=until) for guild in GUILDS}
            key = (period, moment)
            table[("global", 0, None, *key)] = sum(
                e.amount for guild in GUILDS for e in entries[guild] if e.reason != "reset"
            )
            for guild in GUILDS:
                table[("server", guild, None, *key)] = sum(e.amount for e in entries[guild] if e.reason != "reset")
                for user in USERS:
                    table[("member", guild, user, *key)] = sum(e.amount for e in entries[guild] if e.user_id == user)
    return table


async def test_usage_of_every_scope_and_period_is_what_the_ledger_says(
    store: Store, new_job: Callable[..., NewJob]
) -> None:
    await busy_weeks(store, new_job, seed=11)

    reported = await usage_table(store)

    assert reported == await ledger_table(store)
    assert any(reported.values())


async def test_the_migration_builds_the_totals_from_an_existing_ledger(
    store_factory: StoreFactory, new_job: Callable[..., NewJob]
) -> None:
    store = store_factory()
    await store.open()
    await busy_weeks(store, new_job, seed=12)
    before = await usage_table(store)
    await store.close()
    # The database as it was before the totals existed: only the ledger.
    await run_around_the_store(
        store_factory,
        store,
        ["DROP TABLE usage_daily", "DELETE FROM schema_migrations WHERE version = 3"],
    )

    again = store_factory()
    await again.open()

    assert await usage_table(again) == before == await ledger_table(again)
