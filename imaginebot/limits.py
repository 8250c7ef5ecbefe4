"""Credit limits and how a member's limit is chosen among their own, their roles', the server's and the bot's."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

from imaginebot.periods import DAYS_PER_PERIOD, Period


@dataclass(frozen=True, slots=True)
class Limit:
    """``credits`` (integer hundredths of a credit) per calendar ``period``."""

    credits: int
    period: Period

    def per_day(self) -> Fraction:
        """Credits per day, counting a week as 7 days and a month as 30 (for "most generous" comparisons)."""
        return Fraction(self.credits, DAYS_PER_PERIOD[self.period])


LimitSource = Literal["member", "role", "server", "bot", "exempt"]


@dataclass(frozen=True, slots=True)
class ResolvedLimit:
    """The limit that applies to one member and where it comes from. ``limit`` is None when unlimited."""

    limit: Limit | None
    source: LimitSource
    role_id: int | None = None


def resolve_member_limit(
    *,
    member_limit: Limit | None,
    member_role_ids: Iterable[int],
    role_limits: Mapping[int, Limit],
    exempt_role_ids: Iterable[int],
    server_default: Limit | None,
    bot_default: Limit,
) -> ResolvedLimit:
    """Pick the member's limit: exempt role, else own limit, else the most generous role, else server, else bot."""
    roles = list(member_role_ids)
    exempt = set(exempt_role_ids)
    for role_id in roles:
        if role_id in exempt:
            return ResolvedLimit(None, "exempt", role_id)
    if member_limit is not None:
        return ResolvedLimit(member_limit, "member")
    best: tuple[Fraction, int, Limit] | None = None
    for role_id in roles:
        limit = role_limits.get(role_id)
        if limit is None:
            continue
        # Ties go to the lower role id so the answer does not depend on the order Discord lists roles in.
        key = (limit.per_day(), -role_id)
        if best is None or key > (best[0], -best[1]):
            best = (limit.per_day(), role_id, limit)
    if best is not None:
        return ResolvedLimit(best[2], "role", best[1])
    if server_default is not None:
        return ResolvedLimit(server_default, "server")
    return ResolvedLimit(bot_default, "bot")
