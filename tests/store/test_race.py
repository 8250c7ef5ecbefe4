"""Concurrent reservations never spend more than a limit allows (on PostgreSQL, over several connections)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from imaginebot.limits import Limit
from imaginebot.store import BudgetCheck, NewJob, Refused, Reserved, Store
from tests.store.conftest import GUILD, NOW, USER, StoreFactory

NewJobFactory = Callable[..., NewJob]


async def racing_store(factory: StoreFactory) -> Store:
    # Many pooled connections on PostgreSQL, so the reservations really run at the same time.
    store = factory(pool_size=20)
    await store.open()
    return store


async def race(
    store: Store, requests: list[NewJob], checks: Callable[[NewJob], list[BudgetCheck]]
) -> list[Reserved | Refused]:
    start = asyncio.Event()

    async def one(request: NewJob) -> Reserved | Refused:
        await start.wait()
        return await store.reserve(request, checks(request), now=NOW)

    tasks = [asyncio.create_task(one(request)) for request in requests]
    await asyncio.sleep(0)
    start.set()
    return await asyncio.gather(*tasks)


async def test_fifty_racing_for_a_members_last_credits(store_factory: StoreFactory, new_job: NewJobFactory) -> None:
    store = await racing_store(store_factory)
    limit = Limit(1000, "day")
    # 300 already spent: 700 left, room for exactly 700 // 30 = 23 more.
    assert isinstance(await store.reserve(new_job(cost=300), [BudgetCheck("member", limit)], now=NOW), Reserved)

    results = await race(store, [new_job(cost=30) for _ in range(50)], lambda _: [BudgetCheck("member", limit)])

    assert sum(isinstance(r, Reserved) for r in results) == 700 // 30
    assert all(r.scope == "member" and r.used + 30 > 1000 for r in results if isinstance(r, Refused))
    assert await store.usage(guild_id=GUILD, user_id=USER, period="day", now=NOW) == 300 + 23 * 30


async def test_fifty_racing_for_a_fresh_member_limit(store_factory: StoreFactory, new_job: NewJobFactory) -> None:
    store = await racing_store(store_factory)
    limit = Limit(1000, "day")

    results = await race(store, [new_job(cost=70) for _ in range(50)], lambda _: [BudgetCheck("member", limit)])

    assert sum(isinstance(r, Reserved) for r in results) == 1000 // 70
    assert await store.usage(guild_id=GUILD, user_id=USER, period="day", now=NOW) == (1000 // 70) * 70


async def test_two_hundred_members_racing_for_a_server_budget_of_fifty(
    store_factory: StoreFactory, new_job: NewJobFactory
) -> None:
    store = await racing_store(store_factory)
    budget = Limit(50 * 120, "week")
    requests = [new_job(user_id=10_000 + index, cost=120) for index in range(200)]

    results = await race(
        store, requests, lambda _: [BudgetCheck("member", Limit(1000, "day")), BudgetCheck("server", budget)]
    )

    reserved = [r for r in results if isinstance(r, Reserved)]
    assert len(reserved) == 50
    assert len({r.job.id for r in reserved}) == 50
    assert {r.scope for r in results if isinstance(r, Refused)} == {"server"}
    assert await store.usage(guild_id=GUILD, user_id=None, period="week", now=NOW, scope="server") == 50 * 120
    assert len(await store.jobs_in_states(["queued"])) == 50


async def test_guilds_racing_for_a_global_budget(store_factory: StoreFactory, new_job: NewJobFactory) -> None:
    store = await racing_store(store_factory)
    budget = Limit(30 * 100, "day")
    requests = [new_job(guild_id=GUILD + index % 10, user_id=USER + index, cost=100) for index in range(120)]

    results = await race(store, requests, lambda _: [BudgetCheck("global", budget)])

    assert sum(isinstance(r, Reserved) for r in results) == 30
    assert await store.usage(guild_id=GUILD, user_id=None, period="day", now=NOW, scope="global") == 3000


async def test_refunds_racing_with_reservations_keep_the_books_straight(
    store_factory: StoreFactory, new_job: NewJobFactory
) -> None:
    store = await racing_store(store_factory)
    limit = [BudgetCheck("member", Limit(10_000, "day"))]
    first = [await store.reserve(new_job(cost=100), limit, now=NOW) for _ in range(20)]
    ids = [r.job.id for r in first if isinstance(r, Reserved)]

    async def refund_twice(job_id: int) -> list[bool]:
        return list(
            await asyncio.gather(*(store.fail_job(job_id, state="failed", error="x", now=NOW) for _ in range(2)))
        )

    outcomes = await asyncio.gather(
        *(refund_twice(job_id) for job_id in ids),
        *(store.reserve(new_job(cost=100), limit, now=NOW) for _ in range(20)),
    )

    refunds = outcomes[: len(ids)]
    assert all(sorted(pair) == [False, True] for pair in refunds)
    assert await store.usage(guild_id=GUILD, user_id=USER, period="day", now=NOW) == 20 * 100
