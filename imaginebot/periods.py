"""Quota periods: calendar days, weeks (starting Monday) and months, all in UTC."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Literal, get_args

Period = Literal["day", "week", "month"]
PERIODS: tuple[Period, ...] = get_args(Period)

# How many days a period counts as when comparing limits of different periods ("most generous role").
DAYS_PER_PERIOD: dict[Period, int] = {"day": 1, "week": 7, "month": 30}


def parse_period(text: str) -> Period:
    """Return ``text`` as a period name, or raise ``ValueError`` naming the accepted ones."""
    value = text.strip().lower()
    if value not in PERIODS:
        raise ValueError(f"period must be one of {', '.join(PERIODS)}, not {text!r}")
    return value  # type: ignore[return-value]


def day_start(moment: datetime) -> datetime:
    """The UTC midnight that starts ``moment``'s day (every period is made of whole such days)."""
    return moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def period_bounds(period: Period, now: datetime) -> tuple[datetime, datetime]:
    """Return the start (inclusive) and end (exclusive) of the calendar period containing ``now``, in UTC."""
    now = now.astimezone(UTC)
    today = day_start(now)
    if period == "day":
        return today, today + timedelta(days=1)
    if period == "week":
        start = today - timedelta(days=now.weekday())
        return start, start + timedelta(days=7)
    if period == "month":
        start = today.replace(day=1)
        end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
        return start, end
    raise ValueError(f"unknown period {period!r}")


def discord_timestamp(moment: datetime, style: str = "R") -> str:
    """Render ``moment`` as a Discord timestamp tag (``<t:1700000000:R>`` shows "in 3 hours")."""
    return f"<t:{int(moment.timestamp())}:{style}>"
