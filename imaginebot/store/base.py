"""What the bot keeps: the storage interface every backend implements, and the records it hands back."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from types import MappingProxyType, TracebackType
from typing import Any, Literal, Self

from imaginebot.limits import Limit
from imaginebot.periods import Period

log = logging.getLogger(__name__)

Scope = Literal["member", "server", "global"]
JobState = Literal["queued", "running", "delivered", "failed", "interrupted", "cancelled"]
FailedState = Literal["failed", "interrupted", "cancelled"]
LedgerReason = Literal["reserve", "refund", "reset"]

# The order in which limits are checked, and so which one a refusal names when several would refuse.
SCOPES: tuple[Scope, ...] = ("member", "server", "global")
# A job in one of these states still holds its reservation: it ends delivered (kept) or refunded.
PENDING_STATES: tuple[JobState, ...] = ("queued", "running")
FINAL_STATES: tuple[JobState, ...] = ("delivered", "failed", "interrupted", "cancelled")

# The GuildSettings fields a moderator can change with ``Store.update_guild_settings``.
SETTINGS_FIELDS: tuple[str, ...] = (
    "default_limit",
    "budget",
    "default_size",
    "default_quality",
    "default_count",
    "default_format",
    "max_count",
    "mod_role_id",
    "log_channel_id",
    "blocked_words",
)


@dataclass(frozen=True, slots=True)
class BudgetCheck:
    """One limit to enforce inside a reservation: the member's own, the server's budget, or the bot-wide one."""

    scope: Scope
    limit: Limit


@dataclass(frozen=True, slots=True)
class NewJob:
    """A generation request about to be reserved. ``cost`` is in hundredths of a credit."""

    guild_id: int
    channel_id: int
    user_id: int
    application_id: int
    interaction_id: int
    interaction_token: str = field(repr=False)
    token_expires_at: datetime
    options: dict[str, Any]
    cost: int


@dataclass(slots=True)
class Job:
    """One generation as stored: who asked, how to answer them, what it cost and where it stands."""

    id: int
    guild_id: int
    channel_id: int
    user_id: int
    application_id: int
    interaction_id: int
    interaction_token: str = field(repr=False)
    token_expires_at: datetime
    options: dict[str, Any]
    cost: int
    state: JobState
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None
    # What 1min.ai said it charged, kept exactly as reported (its own unit, not our hundredths).
    reported_credits: Decimal | None = None
    generator_record_id: str | None = None
    result_channel_id: int | None = None
    result_message_id: int | None = None
    status_message_id: int | None = None
    # The result's other messages, when it had to be split (Discord caps one request at 25 MiB).
    result_extra_message_ids: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Reserved:
    """The reservation succeeded: the job is queued (or running, if reserved with ``start``) and its cost counted."""

    job: Job


@dataclass(frozen=True, slots=True)
class Refused:
    """The reservation was refused by the first limit (member, then server, then global) it would break."""

    scope: Scope
    limit: Limit
    used: int
    resets_at: datetime

    @property
    def remaining(self) -> int:
        """Hundredths of a credit still available in this period under ``limit``."""
        return max(0, self.limit.credits - self.used)


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One change of credits. ``amount`` is + for a charge, - for a refund or reset; ``charged_at`` is the
    time of the request it belongs to, so a refund lowers the usage of the period the request was made in."""

    id: int
    guild_id: int
    user_id: int
    job_id: int | None
    amount: int
    reason: LedgerReason
    charged_at: datetime
    created_at: datetime
    actor_id: int | None


@dataclass(frozen=True, slots=True)
class GuildSettings:
    """A server's settings, limits and exemptions. Unset values are None (the bot's defaults apply)."""

    guild_id: int
    default_limit: Limit | None = None
    budget: Limit | None = None
    default_size: str | None = None
    default_quality: str | None = None
    default_count: int | None = None
    default_format: str | None = None
    max_count: int | None = None
    mod_role_id: int | None = None
    log_channel_id: int | None = None
    blocked_words: tuple[str, ...] = ()
    role_limits: Mapping[int, Limit] = field(default_factory=lambda: MappingProxyType({}))
    exempt_role_ids: frozenset[int] = frozenset()


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One moderator action. ``before`` and ``after`` hold the changed values as decoded JSON."""

    id: int
    guild_id: int
    actor_id: int
    action: str
    target: str | None
    before: Any
    after: Any
    at: datetime


class Store(ABC):
    """Quotas, the credit ledger, jobs and server settings, behind one interface for SQLite and PostgreSQL.

    Use ``await store.open()`` / ``await store.close()``, or ``async with store:``. Every ``now`` argument is an
    aware datetime (defaults to the current time); credits are integer hundredths of a credit.
    """

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @abstractmethod
    async def open(self) -> None:
        """Connect and apply any migrations not yet applied (safe to run on every start)."""

    @abstractmethod
    async def close(self) -> None:
        """Close the connections."""

    # Reservations and jobs

    @abstractmethod
    async def reserve(
        self, job: NewJob, checks: Sequence[BudgetCheck], *, now: datetime | None = None, start: bool = False
    ) -> Reserved | Refused:
        """Atomically check every limit in ``checks`` and, if the job's cost fits all, insert it as queued with
        its 'reserve' ledger row. A "member" check counts the member's usage in the job's guild, "server" the
        guild's, "global" every guild's, each in its own calendar period containing ``now``.

        ``start``: the job already has its place among the jobs in flight, so it is inserted as running (started
        ``now``) and goes to the generator without a second write."""

    @abstractmethod
    async def usage(
        self,
        *,
        guild_id: int,
        user_id: int | None,
        period: Period,
        now: datetime | None = None,
        scope: Scope = "member",
    ) -> int:
        """Hundredths used in the period containing ``now``, as ``reserve`` counts them for ``scope``."""

    @abstractmethod
    async def mark_running(self, job_id: int, *, now: datetime | None = None) -> bool:
        """Move a queued job to running; False (and nothing changes) if it is not queued, e.g. cancelled."""

    @abstractmethod
    async def mark_delivered(
        self,
        job_id: int,
        *,
        result_channel_id: int | None,
        result_message_id: int | None,
        reported_credits: float | int | Decimal | None = None,
        generator_record_id: str | None = None,
        result_extra_message_ids: Sequence[int] = (),
        refund: int = 0,
        now: datetime | None = None,
    ) -> bool:
        """Mark a queued or running job delivered (its reservation is kept, less ``refund`` hundredths given back
        in the same transaction: images that never came). False if it had already finished."""

    @abstractmethod
    async def fail_job(
        self,
        job_id: int,
        *,
        state: FailedState,
        error: str,
        reported_credits: float | int | Decimal | None = None,
        generator_record_id: str | None = None,
        actor_id: int | None = None,
        now: datetime | None = None,
    ) -> bool:
        """End a queued or running job in ``state`` and refund its cost, in one transaction. False (and nothing
        changes) if the job had already finished, so a refund happens at most once."""

    @abstractmethod
    async def set_status_message(self, job_id: int, message_id: int | None) -> None:
        """Remember the message that shows the job's status (the one edited as it changes)."""

    @abstractmethod
    async def get_job(self, job_id: int) -> Job | None:
        """The job with this id, or None."""

    @abstractmethod
    async def jobs_in_states(self, states: Sequence[str]) -> list[Job]:
        """Every job in one of ``states``, oldest first."""

    @abstractmethod
    async def interrupt_running_jobs(self, *, error: str, now: datetime | None = None) -> list[Job]:
        """At start-up: end every running job as interrupted and refund it, atomically; returns them, oldest first."""

    @abstractmethod
    async def recent_jobs(self, *, guild_id: int, user_id: int, limit: int = 5) -> list[Job]:
        """The member's latest jobs in the guild, newest first."""

    @abstractmethod
    async def job_refunds(self, *, guild_id: int, job_ids: Sequence[int]) -> dict[int, int]:
        """Hundredths given back so far to each of these jobs of the guild (all of a failed one, the missing
        images' share of a delivered one); jobs given nothing back, and other guilds' jobs, are left out. Any
        number of ids may be asked for."""

    # Settings and limits

    @abstractmethod
    async def get_guild_settings(self, guild_id: int) -> GuildSettings:
        """The server's settings, role limits and exempt roles (all unset when nothing was saved)."""

    @abstractmethod
    async def update_guild_settings(
        self, guild_id: int, *, actor_id: int, action: str, **changes: Any
    ) -> GuildSettings:
        """Change some of the fields in ``SETTINGS_FIELDS`` (``default_limit``/``budget`` as ``Limit | None``,
        ``blocked_words`` as a sequence of str) and audit the change; returns the settings as now saved."""

    @abstractmethod
    async def member_limits(self, guild_id: int) -> dict[int, Limit]:
        """Every member limit a server set, by user id (one query, for caching)."""

    @abstractmethod
    async def get_member_limit(self, guild_id: int, user_id: int) -> Limit | None:
        """The member's own limit, or None when they have none."""

    @abstractmethod
    async def set_member_limit(self, guild_id: int, user_id: int, limit: Limit | None, *, actor_id: int) -> None:
        """Set (or with None, clear) the member's own limit; audited."""

    @abstractmethod
    async def set_role_limit(self, guild_id: int, role_id: int, limit: Limit | None, *, actor_id: int) -> None:
        """Set (or with None, clear) the limit of members holding the role; audited."""

    @abstractmethod
    async def set_role_exempt(self, guild_id: int, role_id: int, exempt: bool, *, actor_id: int) -> None:
        """Exempt the role's members from member limits (or stop exempting them); audited."""

    @abstractmethod
    async def reset_member_usage(
        self, guild_id: int, user_id: int, period: Period, *, actor_id: int, now: datetime | None = None
    ) -> int:
        """Give back the member's usage of the current ``period`` with a 'reset' ledger row (budgets keep what
        was spent); audited. Reservations of jobs still queued or running stay: they are refunded or kept when
        the job ends, so the same credits are never given back twice. Returns the hundredths given back."""

    @abstractmethod
    async def ledger(self, *, guild_id: int, since: datetime, until: datetime) -> list[LedgerEntry]:
        """The guild's ledger rows charged in [since, until), in order of charge time."""

    @abstractmethod
    async def usage_by_member(self, *, guild_id: int, since: datetime, until: datetime) -> list[tuple[int, int]]:
        """(user_id, used) for every member with non-zero usage charged in [since, until), most used first."""

    @abstractmethod
    async def audit_log(self, guild_id: int, limit: int = 50) -> list[AuditEntry]:
        """The guild's latest moderator actions, newest first."""

    @abstractmethod
    async def get_state(self, key: str) -> str | None:
        """A value the bot keeps for itself (e.g. the hash of the last command sync), or None."""

    @abstractmethod
    async def set_state(self, key: str, value: str) -> None:
        """Save a value the bot keeps for itself."""
