"""Reservations, refunds and job states, on every backend."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from imaginebot.limits import Limit
from imaginebot.store import BudgetCheck, NewJob, Refused, Reserved, Store
from tests.store.conftest import GUILD, NOW, OTHER_GUILD, OTHER_USER, USER, StoreFactory

NewJobFactory = Callable[..., NewJob]


def member(credits: int, period: str = "day") -> BudgetCheck:
    return BudgetCheck("member", Limit(credits, period))  # type: ignore[arg-type]


def server(credits: int, period: str = "day") -> BudgetCheck:
    return BudgetCheck("server", Limit(credits, period))  # type: ignore[arg-type]


def everyone(credits: int, period: str = "day") -> BudgetCheck:
    return BudgetCheck("global", Limit(credits, period))  # type: ignore[arg-type]


async def reserved(store: Store, job: NewJob, checks: list[BudgetCheck], now: datetime = NOW) -> int:
    result = await store.reserve(job, checks, now=now)
    assert isinstance(result, Reserved), result
    return result.job.id


async def test_reserve_within_limit_queues_the_job_and_charges_it(store: Store, new_job: NewJobFactory) -> None:
    request = new_job(cost=250, options={"prompt": "ünïcode fox", "count": 2, "background": None})
    result = await store.reserve(request, [member(500)], now=NOW)

    assert isinstance(result, Reserved)
    job = result.job
    assert job.state == "queued"
    assert (job.guild_id, job.user_id, job.cost) == (GUILD, USER, 250)
    assert job.options == {"prompt": "ünïcode fox", "count": 2, "background": None}
    assert job.interaction_token == request.interaction_token
    assert job.token_expires_at == request.token_expires_at
    assert job.created_at == NOW
    assert job.started_at is job.finished_at is None
    assert await store.get_job(job.id) == job
    assert await store.usage(guild_id=GUILD, user_id=USER, period="day", now=NOW) == 250

    [entry] = await store.ledger(guild_id=GUILD, since=NOW - timedelta(days=1), until=NOW + timedelta(days=1))
    assert (entry.job_id, entry.user_id, entry.amount, entry.reason) == (job.id, USER, 250, "reserve")
    assert entry.charged_at == entry.created_at == NOW
    assert entry.actor_id is None


async def test_token_is_not_in_a_jobs_repr(store: Store, new_job: NewJobFactory) -> None:
    request = new_job(interaction_token="very-secret-token")
    job_id = await reserved(store, request, [])
    assert "very-secret-token" not in repr(await store.get_job(job_id))
    assert "very-secret-token" not in repr(request)


async def test_member_limit_refuses_with_used_remaining_and_reset_time(store: Store, new_job: NewJobFactory) -> None:
    await reserved(store, new_job(cost=300), [member(500)])

    result = await store.reserve(new_job(cost=300), [member(500)], now=NOW)

    assert result == Refused("member", Limit(500, "day"), 300, datetime(2026, 3, 12, tzinfo=UTC))
    assert isinstance(result, Refused)
    assert result.remaining == 200
    assert len(await store.jobs_in_states(["queued"])) == 1
    assert await store.usage(guild_id=GUILD, user_id=USER, period="day", now=NOW) == 300


async def test_a_cost_that_fits_exactly_is_accepted_and_the_next_hundredth_is_not(
    store: Store, new_job: NewJobFactory
) -> None:
    await reserved(store, new_job(cost=499), [member(500)])
    await reserved(store, new_job(cost=1), [member(500)])
    result = await store.reserve(new_job(cost=1), [member(500)], now=NOW)
    assert isinstance(result, Refused)
    assert (result.used, result.remaining) == (500, 0)


async def test_server_budget_counts_every_member_of_the_guild(store: Store, new_job: NewJobFactory) -> None:
    budget = server(1000, "week")
    await reserved(store, new_job(user_id=USER, cost=600), [member(5000), budget])
    # Another guild's spending is not this guild's.
    await reserved(store, new_job(guild_id=OTHER_GUILD, cost=900), [server(1000, "week")])

    result = await store.reserve(new_job(user_id=OTHER_USER, cost=500), [member(5000), budget], now=NOW)

    assert result == Refused("server", Limit(1000, "week"), 600, datetime(2026, 3, 16, tzinfo=UTC))
    assert await store.usage(guild_id=GUILD, user_id=None, period="week", now=NOW, scope="server") == 600


async def test_global_budget_counts_every_guild(store: Store, new_job: NewJobFactory) -> None:
    await reserved(store, new_job(guild_id=GUILD, cost=700), [everyone(1000, "month")])

    result = await store.reserve(new_job(guild_id=OTHER_GUILD, cost=400), [everyone(1000, "month")], now=NOW)

    assert result == Refused("global", Limit(1000, "month"), 700, datetime(2026, 4, 1, tzinfo=UTC))
    assert await store.usage(guild_id=OTHER_GUILD, user_id=None, period="month", now=NOW, scope="global") == 700


async def test_refusal_names_member_then_server_then_global_whatever_the_order_given(
    store: Store, new_job: NewJobFactory
) -> None:
    await reserved(store, new_job(cost=100), [])

    all_full = [everyone(100), server(100), member(100)]
    result = await store.reserve(new_job(), all_full, now=NOW)
    assert isinstance(result, Refused)
    assert result.scope == "member"

    budgets_full = [everyone(100), server(100), member(1000)]
    result = await store.reserve(new_job(), budgets_full, now=NOW)
    assert isinstance(result, Refused)
    assert result.scope == "server"

    only_global_full = [everyone(100), server(1000), member(1000)]
    result = await store.reserve(new_job(), only_global_full, now=NOW)
    assert isinstance(result, Refused)
    assert result.scope == "global"


async def test_no_checks_means_unlimited(store: Store, new_job: NewJobFactory) -> None:
    for _ in range(3):
        await reserved(store, new_job(cost=10_000), [])
    assert await store.usage(guild_id=GUILD, user_id=USER, period="day", now=NOW) == 30_000


async def test_member_usage_is_per_guild(store: Store, new_job: NewJobFactory) -> None:
    await reserved(store, new_job(guild_id=GUILD, cost=400), [member(500)])
    await reserved(store, new_job(guild_id=OTHER_GUILD, cost=400), [member(500)])
    assert await store.usage(guild_id=GUILD, user_id=USER, period="day", now=NOW) == 400
    assert await store.usage(guild_id=OTHER_GUILD, user_id=USER, period="day", now=NOW) == 400


async def test_failure_refunds_once(store: Store, new_job: NewJobFactory) -> None:
    job_id = await reserved(store, new_job(cost=300), [member(500)])
    assert await store.mark_running(job_id, now=NOW)

    later = NOW + timedelta(minutes=2)
    assert await store.fail_job(
        job_id, state="failed", error="server error", reported_credits=0.1, generator_record_id="rec-1", now=later
    )
    assert not await store.fail_job(job_id, state="failed", error="again", now=later)
    assert not await store.fail_job(job_id, state="cancelled", error="again", now=later)

    assert await store.usage(guild_id=GUILD, user_id=USER, period="day", now=NOW) == 0
    job = await store.get_job(job_id)
    assert job is not None
    assert (job.state, job.error, job.finished_at) == ("failed", "server error", later)
    assert job.reported_credits == Decimal("0.1")
    assert job.generator_record_id == "rec-1"
    entries = await store.ledger(guild_id=GUILD, since=NOW - timedelta(days=1), until=NOW + timedelta(days=1))
    assert [(e.reason, e.amount) for e in entries] == [("reserve", 300), ("refund", -300)]
    # The whole limit is available again.
    await reserved(store, new_job(cost=500), [member(500)])


async def test_delivered_job_is_kept_and_cannot_be_refunded(store: Store, new_job: NewJobFactory) -> None:
    job_id = await reserved(store, new_job(cost=300), [])
    assert await store.mark_running(job_id, now=NOW)
    assert await store.mark_delivered(
        job_id, result_channel_id=77, result_message_id=88, reported_credits=3, generator_record_id="rec", now=NOW
    )

    assert not await store.fail_job(job_id, state="failed", error="late", now=NOW)
    assert not await store.mark_delivered(job_id, result_channel_id=1, result_message_id=2, now=NOW)
    job = await store.get_job(job_id)
    assert job is not None
    assert (job.state, job.result_channel_id, job.result_message_id) == ("delivered", 77, 88)
    assert job.reported_credits == Decimal(3)
    assert await store.usage(guild_id=GUILD, user_id=USER, period="day", now=NOW) == 300


async def test_a_delivery_short_of_images_gives_back_their_share_once(store: Store, new_job: NewJobFactory) -> None:
    yesterday = NOW - timedelta(days=1)
    job_id = await reserved(store, new_job(cost=400), [server(10_000), everyone(10_000)], now=yesterday)
    assert await store.mark_delivered(job_id, result_channel_id=77, result_message_id=88, refund=300, now=NOW)
    assert not await store.mark_delivered(job_id, result_channel_id=77, result_message_id=88, refund=300, now=NOW)
    assert not await store.fail_job(job_id, state="failed", error="late", now=NOW)

    entries = await store.ledger(guild_id=GUILD, since=yesterday - timedelta(days=1), until=NOW + timedelta(days=1))
    assert [(e.reason, e.amount) for e in entries] == [("reserve", 400), ("refund", -300)]
    assert entries[1].charged_at == yesterday  # given back to the period it was charged in
    assert await store.usage(guild_id=GUILD, user_id=USER, period="day", now=yesterday) == 100
    assert await store.usage(guild_id=GUILD, user_id=None, period="day", now=yesterday, scope="server") == 100
    job = await store.get_job(job_id)
    assert job is not None and (job.state, job.result_message_id) == ("delivered", 88)


async def test_a_split_results_other_messages_are_kept(store: Store, new_job: NewJobFactory) -> None:
    job_id = await reserved(store, new_job(), [])
    big = 1_234_567_890_123_456_789  # snowflakes need 64 bits
    assert await store.mark_delivered(
        job_id, result_channel_id=77, result_message_id=88, result_extra_message_ids=[big, big + 1], now=NOW
    )
    job = await store.get_job(job_id)
    assert job is not None and job.result_extra_message_ids == (big, big + 1)
    other = await reserved(store, new_job(), [])
    assert await store.mark_delivered(other, result_channel_id=77, result_message_id=89, now=NOW)
    job = await store.get_job(other)
    assert job is not None and job.result_extra_message_ids == ()


async def test_cancelled_queued_job_is_refunded_and_never_runs(store: Store, new_job: NewJobFactory) -> None:
    job_id = await reserved(store, new_job(cost=200), [])
    assert await store.fail_job(job_id, state="cancelled", error="cancelled by a moderator", actor_id=42, now=NOW)
    assert not await store.mark_running(job_id, now=NOW)
    assert not await store.mark_delivered(job_id, result_channel_id=1, result_message_id=2, now=NOW)
    job = await store.get_job(job_id)
    assert job is not None
    assert job.state == "cancelled"
    assert await store.usage(guild_id=GUILD, user_id=USER, period="day", now=NOW) == 0
    refund = (await store.ledger(guild_id=GUILD, since=NOW, until=NOW + timedelta(seconds=1)))[-1]
    assert (refund.reason, refund.actor_id) == ("refund", 42)


async def test_mark_running_only_from_queued(store: Store, new_job: NewJobFactory) -> None:
    job_id = await reserved(store, new_job(), [])
    started = NOW + timedelta(seconds=5)
    assert await store.mark_running(job_id, now=started)
    assert not await store.mark_running(job_id, now=started)
    job = await store.get_job(job_id)
    assert job is not None
    assert (job.state, job.started_at) == ("running", started)
    assert not await store.mark_running(999_999, now=started)


async def test_a_reservation_with_start_inserts_the_job_running_and_charged(
    store: Store, new_job: NewJobFactory
) -> None:
    result = await store.reserve(new_job(cost=300), [member(500)], now=NOW, start=True)

    assert isinstance(result, Reserved)
    job = result.job
    assert (job.state, job.started_at) == ("running", NOW)
    assert await store.get_job(job.id) == job
    assert not await store.mark_running(job.id, now=NOW)  # already running: the one write was enough
    assert await store.usage(guild_id=GUILD, user_id=USER, period="day", now=NOW) == 300
    [entry] = await store.ledger(guild_id=GUILD, since=NOW, until=NOW + timedelta(seconds=1))
    assert (entry.job_id, entry.amount, entry.reason) == (job.id, 300, "reserve")
    # It settles like any running job: delivered, or refunded by a failure or a restart.
    assert await store.fail_job(job.id, state="failed", error="generator said no", now=NOW)
    assert await store.usage(guild_id=GUILD, user_id=USER, period="day", now=NOW) == 0


async def test_a_refused_reservation_with_start_inserts_nothing(store: Store, new_job: NewJobFactory) -> None:
    result = await store.reserve(new_job(cost=600), [member(500)], now=NOW, start=True)

    assert isinstance(result, Refused)
    assert await store.jobs_in_states(["queued", "running"]) == []
    assert await store.ledger(guild_id=GUILD, since=NOW, until=NOW + timedelta(seconds=1)) == []


async def test_a_job_reserved_running_is_interrupted_by_a_restart(store: Store, new_job: NewJobFactory) -> None:
    result = await store.reserve(new_job(cost=100), [], now=NOW, start=True)
    assert isinstance(result, Reserved)

    [job] = await store.interrupt_running_jobs(error="the bot restarted", now=NOW + timedelta(minutes=1))

    assert (job.id, job.state) == (result.job.id, "interrupted")
    assert await store.usage(guild_id=GUILD, user_id=USER, period="day", now=NOW) == 0


async def test_refund_of_a_job_from_yesterday_lowers_yesterdays_usage_not_todays(
    store: Store, new_job: NewJobFactory
) -> None:
    yesterday = NOW - timedelta(days=1)
    old_job = await reserved(store, new_job(cost=400), [member(500)], now=yesterday)
    await reserved(store, new_job(cost=300), [member(500)], now=NOW)
    assert await store.mark_running(old_job, now=yesterday)

    assert await store.fail_job(old_job, state="failed", error="timeout", now=NOW)

    assert await store.usage(guild_id=GUILD, user_id=USER, period="day", now=NOW) == 300
    assert await store.usage(guild_id=GUILD, user_id=USER, period="day", now=yesterday) == 0
    entries = await store.ledger(guild_id=GUILD, since=yesterday - timedelta(days=1), until=NOW)
    [refund] = [entry for entry in entries if entry.reason == "refund"]
    assert (refund.amount, refund.charged_at, refund.created_at) == (-400, yesterday, NOW)
    # Today's remaining credit did not grow: 300 used of 500.
    result = await store.reserve(new_job(cost=201), [member(500)], now=NOW)
    assert isinstance(result, Refused)
    assert result.used == 300


async def test_a_reservation_at_the_last_second_of_sunday_counts_for_that_week(
    store: Store, new_job: NewJobFactory
) -> None:
    sunday_night = datetime(2026, 3, 15, 23, 59, 59, 999_999, tzinfo=UTC)
    monday = datetime(2026, 3, 16, tzinfo=UTC)
    await reserved(store, new_job(cost=700), [member(700, "week")], now=sunday_night)

    refused = await store.reserve(new_job(cost=1), [member(700, "week")], now=sunday_night)
    assert isinstance(refused, Refused)
    assert refused.resets_at == monday
    assert await store.usage(guild_id=GUILD, user_id=USER, period="week", now=sunday_night) == 700
    assert await store.usage(guild_id=GUILD, user_id=USER, period="week", now=monday) == 0
    assert await store.usage(guild_id=GUILD, user_id=USER, period="day", now=sunday_night) == 700
    await reserved(store, new_job(cost=700), [member(700, "week")], now=monday)


async def test_usage_on_the_day_a_period_ends_is_not_counted_in_it(store: Store, new_job: NewJobFactory) -> None:
    """A period's end is exclusive in every sum: usage already recorded for Monday (a clock a moment ahead, say)
    does not fill the week that ends as Monday begins, for any scope."""
    sunday_night = datetime(2026, 3, 15, 23, 59, 59, tzinfo=UTC)
    monday = datetime(2026, 3, 16, tzinfo=UTC)
    await reserved(store, new_job(cost=700), [], now=monday)
    limits = [member(700, "week"), server(700, "week"), everyone(700, "week")]
    await reserved(store, new_job(cost=700), limits, now=sunday_night)


async def test_month_boundary(store: Store, new_job: NewJobFactory) -> None:
    last_moment = datetime(2026, 3, 31, 23, 59, 59, 999_999, tzinfo=UTC)
    await reserved(store, new_job(cost=100), [], now=last_moment)
    assert await store.usage(guild_id=GUILD, user_id=USER, period="month", now=NOW) == 100
    assert await store.usage(guild_id=GUILD, user_id=USER, period="month", now=last_moment + timedelta(0, 0, 1)) == 0


async def test_times_in_other_zones_are_the_same_instant(store: Store, new_job: NewJobFactory) -> None:
    plus_two = timezone(timedelta(hours=2))
    local = datetime(2026, 3, 12, 1, 30, tzinfo=plus_two)  # 2026-03-11 23:30 UTC
    job_id = await reserved(store, new_job(), [], now=local)
    job = await store.get_job(job_id)
    assert job is not None
    assert job.created_at == local
    assert job.created_at.utcoffset() == timedelta(0)
    assert await store.usage(guild_id=GUILD, user_id=USER, period="day", now=NOW) == 100


async def test_naive_times_are_refused(store: Store, new_job: NewJobFactory) -> None:
    with pytest.raises(ValueError, match="aware"):
        await store.reserve(new_job(), [], now=datetime(2026, 3, 11, 12, 0))
    with pytest.raises(ValueError, match="token_expires_at"):
        await store.reserve(new_job(token_expires_at=datetime(2026, 3, 11, 12, 15)), [], now=NOW)


async def test_interrupt_refunds_running_jobs_and_keeps_queued_ones(store: Store, new_job: NewJobFactory) -> None:
    running = await reserved(store, new_job(cost=100), [])
    queued = await reserved(store, new_job(cost=200), [])
    delivered = await reserved(store, new_job(cost=400), [])
    other_running = await reserved(store, new_job(guild_id=OTHER_GUILD, cost=800), [])
    for job_id in (running, delivered, other_running):
        assert await store.mark_running(job_id, now=NOW)
    assert await store.mark_delivered(delivered, result_channel_id=1, result_message_id=2, now=NOW)

    restart = NOW + timedelta(minutes=3)
    jobs = await store.interrupt_running_jobs(error="the bot restarted", now=restart)

    assert [job.id for job in jobs] == [running, other_running]
    assert all(job.state == "interrupted" and job.finished_at == restart for job in jobs)
    assert jobs[0].interaction_token  # needed to tell the member
    assert [job.id for job in await store.jobs_in_states(["queued"])] == [queued]
    assert await store.usage(guild_id=GUILD, user_id=USER, period="day", now=NOW) == 600
    assert await store.usage(guild_id=OTHER_GUILD, user_id=USER, period="day", now=NOW) == 0
    assert await store.interrupt_running_jobs(error="again", now=restart) == []
    assert not await store.fail_job(running, state="failed", error="late", now=restart)


async def test_jobs_in_states_and_recent_jobs(store: Store, new_job: NewJobFactory) -> None:
    ids = [await reserved(store, new_job(), []) for _ in range(4)]
    other = await reserved(store, new_job(user_id=OTHER_USER), [])
    await store.mark_running(ids[1], now=NOW)

    assert [job.id for job in await store.jobs_in_states(["queued", "running"])] == [*ids, other]
    assert [job.id for job in await store.jobs_in_states(["running"])] == [ids[1]]
    assert await store.jobs_in_states([]) == []
    assert [job.id for job in await store.recent_jobs(guild_id=GUILD, user_id=USER, limit=3)] == ids[:0:-1]
    assert await store.recent_jobs(guild_id=OTHER_GUILD, user_id=USER) == []


async def test_status_message_round_trip(store: Store, new_job: NewJobFactory) -> None:
    job_id = await reserved(store, new_job(), [])
    await store.set_status_message(job_id, 123_456_789_012_345_678)
    job = await store.get_job(job_id)
    assert job is not None
    assert job.status_message_id == 123_456_789_012_345_678
    await store.set_status_message(job_id, None)
    job = await store.get_job(job_id)
    assert job is not None
    assert job.status_message_id is None
    assert await store.get_job(job_id + 1000) is None


async def test_bad_arguments_are_refused(store: Store, new_job: NewJobFactory) -> None:
    with pytest.raises(ValueError, match="cost"):
        await store.reserve(new_job(cost=-1), [], now=NOW)
    with pytest.raises(ValueError, match="scope"):
        await store.reserve(new_job(), [BudgetCheck("team", Limit(1, "day"))], now=NOW)  # type: ignore[arg-type]
    job_id = await reserved(store, new_job(), [])
    with pytest.raises(ValueError, match="state"):
        await store.fail_job(job_id, state="delivered", error="x", now=NOW)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="user_id"):
        await store.usage(guild_id=GUILD, user_id=None, period="day", now=NOW)
    assert await store.jobs_in_states(["queued"]) != []


async def test_job_refunds_sum_what_each_job_was_given_back(store: Store, new_job: NewJobFactory) -> None:
    failed = await reserved(store, new_job(cost=300), [])
    partial = await reserved(store, new_job(cost=400), [])
    whole = await reserved(store, new_job(cost=100), [])
    await store.fail_job(failed, state="failed", error="boom", now=NOW)
    await store.mark_delivered(partial, result_channel_id=1, result_message_id=2, refund=300, now=NOW)
    await store.mark_delivered(whole, result_channel_id=1, result_message_id=3, now=NOW)
    assert await store.job_refunds(guild_id=GUILD, job_ids=[failed, partial, whole]) == {failed: 300, partial: 300}
    assert await store.job_refunds(guild_id=GUILD, job_ids=[]) == {}


async def test_job_refunds_leave_out_other_guilds_jobs(store: Store, new_job: NewJobFactory) -> None:
    ours = await reserved(store, new_job(cost=300), [])
    theirs = await reserved(store, new_job(guild_id=OTHER_GUILD, cost=200), [])
    for job_id in (ours, theirs):
        await store.fail_job(job_id, state="failed", error="boom", now=NOW)
    assert await store.job_refunds(guild_id=GUILD, job_ids=[ours, theirs]) == {ours: 300}
    assert await store.job_refunds(guild_id=OTHER_GUILD, job_ids=[theirs, ours]) == {theirs: 200}


async def test_job_refunds_take_any_number_of_ids(
    store_factory: StoreFactory, new_job: NewJobFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    if store_factory.backend == "sqlite":
        # PostgreSQL takes at most 32,767 parameters per query. SQLite takes 32,766 since 3.32 (Debian's build far
        # more), 999 before: be that older build.
        connect = sqlite3.connect

        def old_sqlite(*args: Any, **kwargs: Any) -> sqlite3.Connection:
            conn = connect(*args, **kwargs)
            conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)
            return conn

        monkeypatch.setattr(sqlite3, "connect", old_sqlite)
    store = store_factory()
    await store.open()
    first, middle, last, delivered = [await reserved(store, new_job(cost=100 * n), []) for n in (1, 2, 3, 4)]
    elsewhere = await reserved(store, new_job(guild_id=OTHER_GUILD, cost=500), [])
    for job_id in (first, middle, last, elsewhere):
        await store.fail_job(job_id, state="failed", error="boom", now=NOW)
    await store.mark_delivered(delivered, result_channel_id=1, result_message_id=2, refund=50, now=NOW)

    ids = list(range(10**12, 10**12 + 40_000))  # no such jobs
    ids[0], ids[13_333], ids[20_000], ids[26_666], ids[-2], ids[-1] = first, elsewhere, middle, first, delivered, last
    assert await store.job_refunds(guild_id=GUILD, job_ids=ids) == {first: 100, middle: 200, last: 300, delivered: 50}


async def test_text_with_a_nul_character_is_stored_by_both_backends(store: Store, new_job: NewJobFactory) -> None:
    # A generator's error message may carry one; PostgreSQL's text refused it, leaving the job unsettled there.
    failed = await reserved(store, new_job(cost=300), [])
    assert await store.fail_job(
        failed, state="failed", error="upstream failed\x00", generator_record_id="r\x00", now=NOW
    )
    job = await store.get_job(failed)
    assert job is not None and job.state == "failed" and job.error == "upstream failed\ufffd"
    delivered = await reserved(store, new_job(), [])
    await store.mark_delivered(delivered, result_channel_id=1, result_message_id=2, generator_record_id="\x00", now=NOW)
    assert (await store.get_job(delivered)).generator_record_id == "\ufffd"  # type: ignore[union-attr]


@pytest.mark.parametrize("turns", range(6))
async def test_a_write_cancelled_at_any_moment_leaves_the_store_usable(
    store: Store, new_job: NewJobFactory, turns: int
) -> None:
    # As when a stopping bot cancels a job inside fail_job: on SQLite a BEGIN or COMMIT still running on
    # aiosqlite's thread used to leave a transaction open, and every later write failed.
    first = await reserved(store, new_job(), [])
    second = await reserved(store, new_job(), [])
    task = asyncio.create_task(store.fail_job(first, state="failed", error="cut short", now=NOW))
    for _ in range(turns):
        await asyncio.sleep(0)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert await store.fail_job(second, state="failed", error="later", now=NOW)
    assert isinstance(await store.reserve(new_job(), [], now=NOW), Reserved)
    await store.set_state("after", "fine")
    assert await store.get_state("after") == "fine"
