"""Which limit applies to a member: exemption, own limit, most generous role, server default, bot default."""

from __future__ import annotations

from datetime import UTC, datetime

from imaginebot.limits import Limit, ResolvedLimit, resolve_member_limit
from imaginebot.periods import period_bounds

BOT = Limit(1000, "day")


def resolve(**overrides: object) -> ResolvedLimit:
    arguments: dict[str, object] = {
        "member_limit": None,
        "member_role_ids": [],
        "role_limits": {},
        "exempt_role_ids": [],
        "server_default": None,
        "bot_default": BOT,
    }
    arguments.update(overrides)
    return resolve_member_limit(**arguments)  # type: ignore[arg-type]


def test_order_of_precedence() -> None:
    assert resolve() == ResolvedLimit(BOT, "bot")
    server = Limit(500, "day")
    assert resolve(server_default=server) == ResolvedLimit(server, "server")
    role = Limit(3000, "week")
    assert resolve(server_default=server, member_role_ids=[5], role_limits={5: role}) == ResolvedLimit(role, "role", 5)
    own = Limit(100, "day")
    assert resolve(member_limit=own, member_role_ids=[5], role_limits={5: role}) == ResolvedLimit(own, "member")


def test_most_generous_role_compares_per_day() -> None:
    daily = Limit(500, "day")  # 5/day
    weekly = Limit(4200, "week")  # 6/day
    monthly = Limit(15000, "month")  # 5/day
    resolved = resolve(member_role_ids=[1, 2, 3], role_limits={1: daily, 2: weekly, 3: monthly})
    assert resolved == ResolvedLimit(weekly, "role", 2)


def test_exempt_role_beats_even_the_members_own_limit() -> None:
    resolved = resolve(member_limit=Limit(1, "day"), member_role_ids=[9], exempt_role_ids=[9])
    assert resolved == ResolvedLimit(None, "exempt", 9)


def test_roles_the_member_lacks_are_ignored() -> None:
    assert resolve(member_role_ids=[1], role_limits={2: Limit(9999, "day")}).source == "bot"


def test_calendar_periods_in_utc() -> None:
    sunday_late = datetime(2026, 11, 29, 23, 59, 59, tzinfo=UTC)
    start, end = period_bounds("week", sunday_late)
    assert start == datetime(2026, 11, 23, tzinfo=UTC) and end == datetime(2026, 11, 30, tzinfo=UTC)
    start, end = period_bounds("month", datetime(2026, 12, 31, 12, tzinfo=UTC))
    assert start == datetime(2026, 12, 1, tzinfo=UTC) and end == datetime(2027, 1, 1, tzinfo=UTC)
    start, end = period_bounds("day", datetime(2026, 11, 25, 0, 0, tzinfo=UTC))
    assert start == datetime(2026, 11, 25, tzinfo=UTC) and end == datetime(2026, 11, 26, tzinfo=UTC)
