"""Server settings, limits, exemptions, resets, the audit log and the bot's own state, on every backend."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from imaginebot.limits import Limit
from imaginebot.periods import period_bounds
from imaginebot.store import BudgetCheck, GuildSettings, NewJob, PostgresStore, Refused, Reserved, Store
from tests.store.conftest import GUILD, MOD, NOW, OTHER_GUILD, OTHER_USER, USER, postgres_url

NewJobFactory = Callable[..., NewJob]

ROLE = 6_000_000_000_000_001
OTHER_ROLE = 6_000_000_000_000_002


async def test_a_guild_with_nothing_saved_has_empty_settings(store: Store) -> None:
    settings = await store.get_guild_settings(GUILD)
    assert settings == GuildSettings(GUILD)
    assert settings.default_limit is settings.budget is settings.mod_role_id is None
    assert settings.blocked_words == ()
    assert dict(settings.role_limits) == {}
    assert settings.exempt_role_ids == frozenset()


async def test_settings_round_trip_and_are_audited_with_only_the_changed_fields(store: Store) -> None:
    saved = await store.update_guild_settings(
        GUILD,
        actor_id=MOD,
        action="settings.defaults",
        default_size="1536x1024",
        default_quality="high",
        default_count=2,
        default_format="webp",
    )
    saved = await store.update_guild_settings(
        GUILD,
        actor_id=MOD,
        action="settings.misc",
        default_limit=Limit(250, "week"),
        budget=Limit(100_000, "month"),
        max_count=4,
        mod_role_id=ROLE,
        log_channel_id=7_000_000_000_000_001,
        blocked_words=("gore", "big cats"),
    )

    expected = GuildSettings(
        guild_id=GUILD,
        default_limit=Limit(250, "week"),
        budget=Limit(100_000, "month"),
        default_size="1536x1024",
        default_quality="high",
        default_count=2,
        default_format="webp",
        max_count=4,
        mod_role_id=ROLE,
        log_channel_id=7_000_000_000_000_001,
        blocked_words=("gore", "big cats"),
    )
    assert saved == expected
    assert await store.get_guild_settings(GUILD) == expected
    assert await store.get_guild_settings(OTHER_GUILD) == GuildSettings(OTHER_GUILD)

    latest, first = await store.audit_log(GUILD)
    assert (first.action, first.actor_id, first.target) == ("settings.defaults", MOD, "settings")
    assert first.before == dict.fromkeys(["default_size", "default_quality", "default_count", "default_format"])
    assert first.after == {
        "default_size": "1536x1024",
        "default_quality": "high",
        "default_count": 2,
        "default_format": "webp",
    }
    assert latest.action == "settings.misc"
    assert latest.after["budget"] == {"credits": 100_000, "period": "month"}
    assert latest.after["blocked_words"] == ["gore", "big cats"]
    assert (
        set(latest.after)
        == set(latest.before)
        == {
            "default_limit",
            "budget",
            "max_count",
            "mod_role_id",
            "log_channel_id",
            "blocked_words",
        }
    )
    assert latest.id > first.id


async def test_clearing_a_setting_records_what_it_was(store: Store) -> None:
    await store.update_guild_settings(GUILD, actor_id=MOD, action="quota.budget", budget=Limit(5000, "day"))
    settings = await store.update_guild_settings(GUILD, actor_id=MOD, action="quota.budget-clear", budget=None)

    assert settings.budget is None
    entry = (await store.audit_log(GUILD, limit=1))[0]
    assert entry.action == "quota.budget-clear"
    assert entry.before == {"budget": {"credits": 5000, "period": "day"}}
    assert entry.after == {"budget": None}


async def test_bad_setting_changes_are_refused_and_change_nothing(store: Store) -> None:
    with pytest.raises(TypeError, match="unknown guild setting"):
        await store.update_guild_settings(GUILD, actor_id=MOD, action="x", colour="red")
    with pytest.raises(TypeError, match="blocked_words"):
        await store.update_guild_settings(GUILD, actor_id=MOD, action="x", blocked_words="gore")
    with pytest.raises(TypeError, match="max_count"):
        await store.update_guild_settings(GUILD, actor_id=MOD, action="x", max_count="4")
    with pytest.raises(ValueError, match="credits"):
        await store.update_guild_settings(GUILD, actor_id=MOD, action="x", budget=Limit(-1, "day"))
    with pytest.raises(ValueError, match="at least one"):
        await store.update_guild_settings(GUILD, actor_id=MOD, action="x")
    assert await store.get_guild_settings(GUILD) == GuildSettings(GUILD)
    assert await store.audit_log(GUILD) == []


async def test_a_servers_member_limits_load_in_one_call(store: Store) -> None:
    await store.set_member_limit(GUILD, USER, Limit(1200, "week"), actor_id=MOD)
    await store.set_member_limit(GUILD, OTHER_USER, Limit(50, "month"), actor_id=MOD)
    await store.set_member_limit(OTHER_GUILD, USER, Limit(7, "day"), actor_id=MOD)
    assert await store.member_limits(GUILD) == {USER: Limit(1200, "week"), OTHER_USER: Limit(50, "month")}
    await store.set_member_limit(GUILD, OTHER_USER, None, actor_id=MOD)
    assert await store.member_limits(GUILD) == {USER: Limit(1200, "week")}
    assert await store.member_limits(GUILD + 12345) == {}


async def test_member_limit_set_change_clear_audited(store: Store) -> None:
    assert await store.get_member_limit(GUILD, USER) is None
    await store.set_member_limit(GUILD, USER, Limit(300, "day"), actor_id=MOD)
    await store.set_member_limit(GUILD, USER, Limit(1200, "week"), actor_id=MOD)
    assert await store.get_member_limit(GUILD, USER) == Limit(1200, "week")
    assert await store.get_member_limit(GUILD, OTHER_USER) is None
    assert await store.get_member_limit(OTHER_GUILD, USER) is None
    await store.set_member_limit(GUILD, USER, None, actor_id=MOD + 1)
    assert await store.get_member_limit(GUILD, USER) is None

    cleared, changed, first = await store.audit_log(GUILD)
    assert (first.action, first.target, first.before, first.after) == (
        "member_limit.set",
        f"member:{USER}",
        {"limit": None},
        {"limit": {"credits": 300, "period": "day"}},
    )
    assert (changed.before, changed.after) == (
        {"limit": {"credits": 300, "period": "day"}},
        {"limit": {"credits": 1200, "period": "week"}},
    )
    assert (cleared.action, cleared.actor_id, cleared.after) == ("member_limit.clear", MOD + 1, {"limit": None})


async def test_role_limits_and_exemptions_show_in_the_settings(store: Store) -> None:
    await store.set_role_limit(GUILD, ROLE, Limit(2000, "month"), actor_id=MOD)
    await store.set_role_limit(GUILD, OTHER_ROLE, Limit(50, "day"), actor_id=MOD)
    await store.set_role_exempt(GUILD, OTHER_ROLE, True, actor_id=MOD)
    await store.set_role_exempt(GUILD, OTHER_ROLE, True, actor_id=MOD)  # twice is harmless

    settings = await store.get_guild_settings(GUILD)
    assert dict(settings.role_limits) == {ROLE: Limit(2000, "month"), OTHER_ROLE: Limit(50, "day")}
    assert settings.exempt_role_ids == {OTHER_ROLE}
    with pytest.raises(TypeError):
        settings.role_limits[ROLE] = Limit(1, "day")  # type: ignore[index]

    await store.set_role_limit(GUILD, ROLE, None, actor_id=MOD)
    await store.set_role_exempt(GUILD, OTHER_ROLE, False, actor_id=MOD)
    settings = await store.get_guild_settings(GUILD)
    assert dict(settings.role_limits) == {OTHER_ROLE: Limit(50, "day")}
    assert settings.exempt_role_ids == frozenset()

    actions = [(e.action, e.target, e.before, e.after) for e in reversed(await store.audit_log(GUILD))]
    assert actions == [
        ("role_limit.set", f"role:{ROLE}", {"limit": None}, {"limit": {"credits": 2000, "period": "month"}}),
        ("role_limit.set", f"role:{OTHER_ROLE}", {"limit": None}, {"limit": {"credits": 50, "period": "day"}}),
        ("role_exempt.on", f"role:{OTHER_ROLE}", {"exempt": False}, {"exempt": True}),
        ("role_exempt.on", f"role:{OTHER_ROLE}", {"exempt": True}, {"exempt": True}),
        ("role_limit.clear", f"role:{ROLE}", {"limit": {"credits": 2000, "period": "month"}}, {"limit": None}),
        ("role_exempt.off", f"role:{OTHER_ROLE}", {"exempt": True}, {"exempt": False}),
    ]


async def test_invalid_limits_are_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="credits"):
        await store.set_member_limit(GUILD, USER, Limit(-5, "day"), actor_id=MOD)
    with pytest.raises(ValueError, match="period"):
        await store.set_role_limit(GUILD, ROLE, Limit(5, "year"), actor_id=MOD)  # type: ignore[arg-type]
    assert await store.audit_log(GUILD) == []


async def test_reset_gives_the_member_their_usage_back_but_not_the_server_budget(
    store: Store, new_job: NewJobFactory
) -> None:
    checks = [BudgetCheck("member", Limit(1000, "day")), BudgetCheck("server", Limit(5000, "day"))]
    for cost in (300, 500):
        result = await store.reserve(new_job(cost=cost), checks, now=NOW)
        assert isinstance(result, Reserved)
        await store.mark_delivered(result.job.id, result_channel_id=1, result_message_id=2, now=NOW)

    given = await store.reset_member_usage(GUILD, USER, "day", actor_id=MOD, now=NOW)

    assert given == 800
    assert await store.usage(guild_id=GUILD, user_id=USER, period="day", now=NOW) == 0
    assert await store.usage(guild_id=GUILD, user_id=None, period="day", now=NOW, scope="server") == 800
    assert await store.usage(guild_id=GUILD, user_id=None, period="day", now=NOW, scope="global") == 800
    # The member's whole limit is back.
    assert isinstance(await store.reserve(new_job(cost=1000), checks, now=NOW), Reserved)
    reset = [e for e in await store.ledger(guild_id=GUILD, since=NOW, until=NOW + timedelta(1)) if e.reason == "reset"]
    assert [(e.amount, e.actor_id, e.job_id) for e in reset] == [(-800, MOD, None)]
    audit = (await store.audit_log(GUILD))[0]
    assert (audit.action, audit.target, audit.before, audit.after) == (
        "usage.reset",
        f"member:{USER}",
        {"period": "day", "used": 800},
        {"period": "day", "used": 0},
    )


async def test_a_weeks_reset_gives_each_day_back_its_own_usage_so_no_day_goes_below_zero(
    store: Store, new_job: NewJobFactory
) -> None:
    monday = datetime(2026, 11, 23, 10, tzinfo=UTC)
    tuesday = monday + timedelta(days=1)
    weekly = [BudgetCheck("member", Limit(1000, "week"))]
    result = await store.reserve(new_job(cost=1000), weekly, now=monday)
    assert isinstance(result, Reserved)
    await store.mark_delivered(result.job.id, result_channel_id=1, result_message_id=2, now=monday)

    assert await store.reset_member_usage(GUILD, USER, "week", actor_id=MOD, now=tuesday) == 1000

    assert await store.usage(guild_id=GUILD, user_id=USER, period="week", now=tuesday) == 0
    # The member's limit becomes daily: Tuesday has nothing used, not -1000 (which would allow 20 credits today).
    assert await store.usage(guild_id=GUILD, user_id=USER, period="day", now=tuesday) == 0
    assert await store.usage(guild_id=GUILD, user_id=USER, period="day", now=monday) == 0
    daily = [BudgetCheck("member", Limit(1000, "day"))]
    assert isinstance(await store.reserve(new_job(cost=1000), daily, now=tuesday), Reserved)
    assert isinstance(await store.reserve(new_job(cost=100), daily, now=tuesday), Refused)


async def test_reset_leaves_jobs_in_flight_reserved_so_nothing_is_refunded_twice(
    store: Store, new_job: NewJobFactory
) -> None:
    done = await store.reserve(new_job(cost=300), [], now=NOW)
    waiting = await store.reserve(new_job(cost=200), [], now=NOW)
    assert isinstance(done, Reserved) and isinstance(waiting, Reserved)
    await store.mark_delivered(done.job.id, result_channel_id=1, result_message_id=2, now=NOW)

    assert await store.reset_member_usage(GUILD, USER, "day", actor_id=MOD, now=NOW) == 300
    assert await store.usage(guild_id=GUILD, user_id=USER, period="day", now=NOW) == 200

    assert await store.fail_job(waiting.job.id, state="failed", error="boom", now=NOW)
    assert await store.usage(guild_id=GUILD, user_id=USER, period="day", now=NOW) == 0
    assert await store.reset_member_usage(GUILD, USER, "day", actor_id=MOD, now=NOW) == 0


async def test_reset_only_touches_the_current_period(store: Store, new_job: NewJobFactory) -> None:
    yesterday = NOW - timedelta(days=1)
    for when in (yesterday, NOW):
        result = await store.reserve(new_job(cost=100), [], now=when)
        assert isinstance(result, Reserved)
        await store.mark_delivered(result.job.id, result_channel_id=1, result_message_id=2, now=when)

    assert await store.reset_member_usage(GUILD, USER, "day", actor_id=MOD, now=NOW) == 100
    assert await store.usage(guild_id=GUILD, user_id=USER, period="day", now=yesterday) == 100
    assert await store.usage(guild_id=GUILD, user_id=USER, period="week", now=NOW) == 100


async def test_the_ledger_re_derives_every_usage(store: Store, new_job: NewJobFactory) -> None:
    ids = []
    for user, cost in [(USER, 150), (OTHER_USER, 275), (USER, 90), (OTHER_USER, 60), (USER, 35)]:
        result = await store.reserve(new_job(user_id=user, cost=cost), [], now=NOW)
        assert isinstance(result, Reserved)
        ids.append(result.job.id)
    await store.fail_job(ids[1], state="failed", error="x", now=NOW)
    await store.mark_running(ids[2], now=NOW)
    await store.mark_delivered(ids[0], result_channel_id=1, result_message_id=2, now=NOW)
    await store.reset_member_usage(GUILD, USER, "day", actor_id=MOD, now=NOW)
    await store.interrupt_running_jobs(error="restart", now=NOW)
    await store.reserve(new_job(guild_id=OTHER_GUILD, cost=999), [], now=NOW)

    since, until = period_bounds("day", NOW)
    entries = await store.ledger(guild_id=GUILD, since=since, until=until)
    assert {e.guild_id for e in entries} == {GUILD}
    for user in (USER, OTHER_USER):
        derived = sum(e.amount for e in entries if e.user_id == user)
        assert derived == await store.usage(guild_id=GUILD, user_id=user, period="day", now=NOW)
    spent = sum(e.amount for e in entries if e.reason != "reset")
    assert spent == await store.usage(guild_id=GUILD, user_id=None, period="day", now=NOW, scope="server")
    assert spent + 999 == await store.usage(guild_id=GUILD, user_id=None, period="day", now=NOW, scope="global")

    by_member = await store.usage_by_member(guild_id=GUILD, since=since, until=until)
    expected = {user: sum(e.amount for e in entries if e.user_id == user) for user in (USER, OTHER_USER)}
    assert by_member == sorted(((u, n) for u, n in expected.items() if n), key=lambda pair: (-pair[1], pair[0]))
    assert by_member == [(OTHER_USER, 60), (USER, 35)]


async def test_audit_log_is_per_guild_newest_first_and_limited(store: Store) -> None:
    for credits in range(1, 6):
        await store.set_member_limit(GUILD, USER, Limit(credits, "day"), actor_id=MOD)
    await store.set_member_limit(OTHER_GUILD, USER, Limit(9, "day"), actor_id=MOD)

    entries = await store.audit_log(GUILD, limit=3)
    assert [e.after["limit"]["credits"] for e in entries] == [5, 4, 3]
    assert all(e.guild_id == GUILD for e in entries)
    assert entries[0].at.utcoffset() == timedelta(0)
    assert len(await store.audit_log(OTHER_GUILD)) == 1


async def test_bot_state_round_trip(store: Store) -> None:
    assert await store.get_state("commands_hash") is None
    await store.set_state("commands_hash", "abc")
    await store.set_state("commands_hash", "def")
    await store.set_state("other", "x")
    assert await store.get_state("commands_hash") == "def"
    assert await store.get_state("other") == "x"


async def test_a_refund_committed_while_a_reset_reads_is_not_given_back_twice(new_job: NewJobFactory) -> None:
    """PostgreSQL: each statement sees what is committed when it starts. A job refunded between two reads of a
    reset would count as used in one and as no longer pending in the other: the reset reads once."""
    url = postgres_url()
    schema = f"test_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(url)
    await admin.execute(f'CREATE SCHEMA "{schema}"')
    refund_meanwhile: list[Callable[[], Awaitable[object]]] = []

    class RefundDuringRead:
        def __init__(self, conn: Any) -> None:
            self._conn = conn

        def __getattr__(self, name: str) -> Any:
            return getattr(self._conn, name)

        async def fetch(self, query: str, *args: Any) -> Any:
            rows = await self._conn.fetch(query, *args)
            if "FROM usage_daily" in query and refund_meanwhile:
                await refund_meanwhile.pop()()  # another connection's refund commits now
            return rows

    class RacyStore(PostgresStore):
        @asynccontextmanager
        async def _transaction(self) -> AsyncIterator[Any]:
            async with super()._transaction() as conn:
                yield RefundDuringRead(conn)

    store = RacyStore(url, schema=schema, min_size=1, max_size=3)
    try:
        await store.open()
        delivered = await store.reserve(new_job(cost=200), [], now=NOW)
        assert isinstance(delivered, Reserved)
        await store.mark_delivered(delivered.job.id, result_channel_id=1, result_message_id=2, now=NOW)
        queued = await store.reserve(new_job(cost=300), [], now=NOW)
        assert isinstance(queued, Reserved)
        refund_meanwhile.append(lambda: store.fail_job(queued.job.id, state="failed", error="500", now=NOW))

        assert await store.reset_member_usage(GUILD, USER, "day", actor_id=MOD, now=NOW) == 200
        assert await store.usage(guild_id=GUILD, user_id=USER, period="day", now=NOW) == 0  # not -300
    finally:
        await store.close()
        await admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await admin.close()
