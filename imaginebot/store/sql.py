"""The store's logic, written once in SQL that SQLite and PostgreSQL both run.

Queries use PostgreSQL's numbered parameters (``$1``); the SQLite backend rewrites each to ``?`` (in order). A
backend supplies connections, transactions, its locking and the few type names the two spell differently.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import string
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from functools import cache
from importlib import resources
from types import MappingProxyType
from typing import Any, ClassVar, Protocol

from imaginebot.limits import Limit
from imaginebot.periods import PERIODS, Period, day_start, period_bounds
from imaginebot.store.base import (
    PENDING_STATES,
    SCOPES,
    SETTINGS_FIELDS,
    AuditEntry,
    BudgetCheck,
    FailedState,
    GuildSettings,
    Job,
    LedgerEntry,
    NewJob,
    Refused,
    Reserved,
    Scope,
    Store,
)

log = logging.getLogger(__name__)


class Connection(Protocol):
    """The part of asyncpg's connection the store uses; rows are read by column name or position."""

    async def execute(self, query: str, *args: Any) -> Any: ...

    async def fetch(self, query: str, *args: Any) -> list[Any]: ...

    async def fetchrow(self, query: str, *args: Any) -> Any: ...

    async def fetchval(self, query: str, *args: Any) -> Any: ...


@dataclass(frozen=True, slots=True)
class Statement:
    """One SQL statement (``$n`` parameters) and its arguments, for ``SqlStore._atomically``."""

    query: str
    args: tuple[Any, ...] = ()


# Migrations


@dataclass(frozen=True, slots=True)
class Migration:
    """One numbered schema change from ``store/migrations/NNNN_name.sql``."""

    version: int
    name: str
    template: str

    def render(self, type_names: Mapping[str, str]) -> str:
        """The migration's SQL with the backend's type names filled in (``${timestamp}`` and the like)."""
        return string.Template(self.template).substitute(type_names)


_MIGRATION_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

_BOOTSTRAP = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at ${timestamp} NOT NULL
);
"""


@cache
def load_migrations() -> tuple[Migration, ...]:
    """Every migration shipped with the package, in version order."""
    found: dict[int, Migration] = {}
    for entry in resources.files(__package__).joinpath("migrations").iterdir():
        match = _MIGRATION_FILE.match(entry.name)
        if match is None:
            continue
        version = int(match.group(1))
        if version in found:
            raise RuntimeError(f"two migrations numbered {version}: {found[version].name} and {entry.name}")
        found[version] = Migration(version, entry.name.removesuffix(".sql"), entry.read_text(encoding="utf-8"))
    return tuple(found[version] for version in sorted(found))


# Values in and out of the database


def utc_now() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(UTC)


def _moment(value: datetime | None, name: str = "now") -> datetime:
    if value is None:
        return utc_now()
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be an aware datetime, not naive {value!r}")
    return value.astimezone(UTC)


def _time(value: datetime | str) -> datetime:
    # SQLite hands back the ISO text it was given; PostgreSQL a datetime.
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.astimezone(UTC)


def _optional_time(value: datetime | str | None) -> datetime | None:
    return None if value is None else _time(value)


def _reported(value: float | int | Decimal | None) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise TypeError(f"reported_credits must be a number, not {type(value).__name__}")
    # Via repr so that 0.1 stays 0.1 rather than its binary expansion.
    number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    if not number.is_finite():
        raise ValueError(f"reported_credits must be finite, not {value!r}")
    return number


def _limit_or_none(credits: int | None, period: str | None) -> Limit | None:
    if credits is None or period is None:
        return None
    return Limit(int(credits), period)  # type: ignore[arg-type]


def _check_limit(limit: Limit) -> None:
    if not isinstance(limit, Limit):
        raise TypeError(f"expected a Limit, not {type(limit).__name__}")
    if isinstance(limit.credits, bool) or not isinstance(limit.credits, int) or limit.credits < 0:
        raise ValueError(f"a limit's credits must be an integer >= 0 (hundredths), not {limit.credits!r}")
    if limit.period not in PERIODS:
        raise ValueError(f"a limit's period must be one of {', '.join(PERIODS)}, not {limit.period!r}")


def _limit_json(limit: Limit | None) -> dict[str, Any] | None:
    return None if limit is None else {"credits": limit.credits, "period": limit.period}


def _json_or_null(value: Any) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True)


def _storable(text: str | None) -> str | None:
    """Text from outside (a generator's error message, its record id) as both backends store it: PostgreSQL's text
    refuses a NUL character, which would leave the job unsettled there while SQLite took it."""
    return text.replace("\x00", "\ufffd") if text is not None else None


def _job(row: Any) -> Job:
    return Job(
        id=int(row["id"]),
        guild_id=int(row["guild_id"]),
        channel_id=int(row["channel_id"]),
        user_id=int(row["user_id"]),
        application_id=int(row["application_id"]),
        interaction_id=int(row["interaction_id"]),
        interaction_token=row["interaction_token"],
        token_expires_at=_time(row["token_expires_at"]),
        options=json.loads(row["options"]),
        cost=int(row["cost"]),
        state=row["state"],
        created_at=_time(row["created_at"]),
        started_at=_optional_time(row["started_at"]),
        finished_at=_optional_time(row["finished_at"]),
        error=row["error"],
        reported_credits=None if row["reported_credits"] is None else Decimal(str(row["reported_credits"])),
        generator_record_id=row["generator_record_id"],
        result_channel_id=row["result_channel_id"],
        result_message_id=row["result_message_id"],
        status_message_id=row["status_message_id"],
        result_extra_message_ids=tuple(json.loads(row["result_extra_message_ids"] or "[]")),
    )


def _ledger_entry(row: Any) -> LedgerEntry:
    return LedgerEntry(
        id=int(row["id"]),
        guild_id=int(row["guild_id"]),
        user_id=int(row["user_id"]),
        job_id=row["job_id"],
        amount=int(row["amount"]),
        reason=row["reason"],
        charged_at=_time(row["charged_at"]),
        created_at=_time(row["created_at"]),
        actor_id=row["actor_id"],
    )


_JOB_COLUMNS = (
    "id, guild_id, channel_id, user_id, application_id, interaction_id, interaction_token, token_expires_at, "
    "options, cost, state, created_at, started_at, finished_at, error, reported_credits, generator_record_id, "
    "result_channel_id, result_message_id, status_message_id, result_extra_message_ids"
)
_LEDGER_COLUMNS = "id, guild_id, user_id, job_id, amount, reason, charged_at, created_at, actor_id"
_SETTINGS_COLUMNS = (
    "default_limit_credits, default_limit_period, budget_credits, budget_period, default_size, default_quality, "
    "default_count, default_format, max_count, mod_role_id, log_channel_id, blocked_words"
)
_INTO_LEDGER = "INSERT INTO ledger (guild_id, user_id, job_id, amount, reason, charged_at, created_at, actor_id) "
_INSERT_LEDGER = _INTO_LEDGER + "VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
# Every ledger entry is added to the per-day usage totals in the same transaction (_add_to_ledger): the
# member's (everything), the server's and the bot-wide (what was spent, resets left out). Usage sums read
# these (_usage_query). On PostgreSQL concurrent reservations therefore take turns on the day's bot-wide row
# (each holds it until its short transaction commits), as they already do on the guild lock when a global
# budget is set. Rows are always updated in one order (member, server, bot-wide; then guild, user, day), so
# that two transactions never wait for each other's rows.
_USAGE_SCOPES = ("member", "server", "global")
_INSERT_USAGE = "INSERT INTO usage_daily (scope, guild_id, user_id, day, amount) "
_ADD_USAGE_HEAD = _INSERT_USAGE + "VALUES "
_ADD_USAGE_TAIL = (
    " ON CONFLICT (scope, guild_id, user_id, day) DO UPDATE SET amount = usage_daily.amount + excluded.amount"
)
_PENDING = ", ".join(f"'{state}'" for state in PENDING_STATES)

# Ids per query when a query takes a list of them (job_refunds): within the 999 parameters older SQLite builds allow
# (SQLITE_MAX_VARIABLE_NUMBER; 32,766 since 3.32) and PostgreSQL's 32,767, whatever the caller passes.
_IDS_PER_QUERY = 500

_OPTIONAL_INT_SETTINGS = ("default_count", "max_count", "mod_role_id", "log_channel_id")
_OPTIONAL_TEXT_SETTINGS = ("default_size", "default_quality", "default_format")


def _settings_columns(name: str, value: Any) -> dict[str, Any]:
    """The guild_settings columns (and values) that store the GuildSettings field ``name``."""
    if name in ("default_limit", "budget"):
        if value is not None:
            _check_limit(value)
        return {
            f"{name}_credits": None if value is None else value.credits,
            f"{name}_period": None if value is None else value.period,
        }
    if name == "blocked_words":
        if isinstance(value, str) or not all(isinstance(word, str) for word in value):
            raise TypeError("blocked_words must be a sequence of str")
        return {name: json.dumps(list(value))}
    if name in _OPTIONAL_INT_SETTINGS:
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise TypeError(f"{name} must be an int or None, not {type(value).__name__}")
        return {name: value}
    if name in _OPTIONAL_TEXT_SETTINGS:
        if value is not None and not isinstance(value, str):
            raise TypeError(f"{name} must be a str or None, not {type(value).__name__}")
        return {name: value}
    raise TypeError(f"unknown guild setting {name!r}; expected one of {', '.join(SETTINGS_FIELDS)}")


def _settings_json(settings: GuildSettings, name: str) -> Any:
    value = getattr(settings, name)
    if isinstance(value, Limit):
        return _limit_json(value)
    if isinstance(value, tuple):
        return list(value)
    return value


class _Params:
    """Collects the arguments of a query built in pieces and hands out their ``$n`` placeholders."""

    def __init__(self) -> None:
        self.values: list[Any] = []

    def __call__(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


def _usage_query(
    params: _Params, scope: Scope, guild_id: object, user_id: object | None, start: object, end: object
) -> str:
    """A scalar subquery of the usage ``scope`` counts in [start, end), which must be UTC midnights (as every
    limit's period is): summed from the per-day totals kept beside the ledger (see ``_ADD_USAGE``). The values
    go to ``params`` (for a template, their names do)."""
    if scope == "member":
        if user_id is None:
            raise ValueError("member usage needs a user_id")
        where = f"scope = 'member' AND guild_id = {params(guild_id)} AND user_id = {params(user_id)}"
    elif scope == "server":
        # A moderator's reset gives the member their credits back, but what was spent stays spent.
        where = f"scope = 'server' AND guild_id = {params(guild_id)} AND user_id = 0"
    elif scope == "global":
        where = "scope = 'global' AND guild_id = 0 AND user_id = 0"
    else:
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}, not {scope!r}")
    return (
        f"(SELECT COALESCE(SUM(amount), 0) FROM usage_daily "
        f"WHERE {where} AND day >= {params(start)} AND day < {params(end)})"
    )


# The job INSERT's values, in column order (see _reservation_sql).
_JOB_ARGUMENTS = (
    "guild",
    "channel",
    "user",
    "application",
    "interaction",
    "token",
    "expires",
    "options",
    "cost",
    "now",
    "state",
    "started",
)


@dataclass(frozen=True, slots=True)
class _Template:
    """A query's text and, in order, the names of the arguments its ``$n`` stand for."""

    text: str
    names: tuple[str, ...]


@cache
def _reservation_sql(scopes: tuple[Scope, ...]) -> tuple[_Template, _Template]:
    """A reservation's usage SELECT and its conditional job INSERT for limits of these scopes (in that order),
    built once per combination: the same text every time also lets the database reuse its prepared statement."""
    sums = _Params()
    usage = ", ".join(
        _usage_query(sums, scope, "guild", "user", f"start{index}", f"end{index}") for index, scope in enumerate(scopes)
    )
    params = _Params()
    values = ", ".join(params(name) for name in _JOB_ARGUMENTS)
    fits = [
        f"{_usage_query(params, scope, 'guild', 'user', f'start{index}', f'end{index}')} + {params('cost')} "
        f"<= {params(f'limit{index}')}"
        for index, scope in enumerate(scopes)
    ]
    insert = (
        "INSERT INTO jobs (guild_id, channel_id, user_id, application_id, interaction_id, "
        "interaction_token, token_expires_at, options, cost, created_at, state, started_at) "
        f"SELECT {values} {'WHERE ' + ' AND '.join(fits) if fits else ''} "
        f"RETURNING {_JOB_COLUMNS}"
    )
    return _Template(f"SELECT {usage}", tuple(sums.values)), _Template(insert, tuple(params.values))


@dataclass(frozen=True, slots=True)
class CheckedReservation:
    """A reservation whose arguments ``reserve`` checked, with what every backend derives from them."""

    job: NewJob
    checks: tuple[BudgetCheck, ...]  # in SCOPES order
    bounds: tuple[tuple[datetime, datetime], ...]  # each check's period: start (inclusive), end (exclusive)
    now: datetime
    expires: datetime
    start: bool  # written as running, to start at once; else queued

    @property
    def options(self) -> str:
        """The job's options as the jobs table keeps them."""
        return json.dumps(self.job.options, ensure_ascii=False)

    @property
    def state(self) -> str:
        """The state the job is written in."""
        return "running" if self.start else "queued"

    @property
    def started(self) -> datetime | None:
        """When the job started: now if it starts at once."""
        return self.now if self.start else None

    @property
    def everyone(self) -> bool:
        """Whether a bot-wide budget is checked, which serialises with every guild's reservations."""
        return any(check.scope == "global" for check in self.checks)

    def refusal(self, used: Sequence[Any]) -> Refused:
        """Which limit refused the job, given what each check had ``used`` before it."""
        for index, (check, (_, end)) in enumerate(zip(self.checks, self.bounds, strict=True)):
            if int(used[index]) + self.job.cost > check.limit.credits:
                return Refused(check.scope, check.limit, int(used[index]), end)
        raise RuntimeError(f"job for interaction {self.job.interaction_id} was refused, but no limit is exceeded")


_CHARGE_RESERVED = (
    _INTO_LEDGER + "SELECT guild_id, user_id, id, cost, 'reserve', created_at, created_at, NULL FROM jobs "
    "WHERE guild_id = $1 AND user_id = $2 AND created_at = $3 AND interaction_id = $4 "
    f"AND state IN ({_PENDING}) AND NOT EXISTS (SELECT 1 FROM ledger WHERE ledger.job_id = jobs.id)"
)
# ... and add it to the per-day totals (see _add_to_ledger; same rows, same order), only if the job was inserted.
_ADD_RESERVED_USAGE = (
    _INSERT_USAGE + "SELECT scopes.scope, CASE WHEN scopes.scope = 'global' THEN 0 ELSE jobs.guild_id END, "
    "CASE WHEN scopes.scope = 'member' THEN jobs.user_id ELSE 0 END, $5, jobs.cost "
    "FROM jobs CROSS JOIN (SELECT 'member' AS scope UNION ALL SELECT 'server' UNION ALL SELECT 'global') AS scopes "
    "WHERE jobs.guild_id = $1 AND jobs.user_id = $2 AND jobs.created_at = $3 AND jobs.interaction_id = $4"
    + _ADD_USAGE_TAIL
)


@dataclass(frozen=True, slots=True)
class _NewEntry:
    """A ledger row to add (see _INSERT_LEDGER)."""

    guild_id: int
    user_id: int
    job_id: int | None
    amount: int
    reason: str
    charged_at: datetime
    created_at: datetime
    actor_id: int | None = None


async def _add_to_ledger(conn: Connection, entries: Sequence[_NewEntry]) -> None:
    """Ledger entries and their shares of the per-day usage totals (inside the caller's transaction)."""
    deltas: dict[tuple[int, int, int, datetime], int] = {}
    for entry in entries:
        await conn.execute(
            _INSERT_LEDGER,
            entry.guild_id,
            entry.user_id,
            entry.job_id,
            entry.amount,
            entry.reason,
            entry.charged_at,
            entry.created_at,
            entry.actor_id,
        )
        day = day_start(entry.charged_at)
        shares = [(0, entry.guild_id, entry.user_id)]
        if entry.reason != "reset":  # a reset gives the member credits back; what was spent stays spent
            shares += [(1, entry.guild_id, 0), (2, 0, 0)]
        for scope, guild_id, user_id in shares:
            key = (scope, guild_id, user_id, day)
            deltas[key] = deltas.get(key, 0) + entry.amount
    if not deltas:
        return
    params = _Params()
    rows = ", ".join(
        f"({params(_USAGE_SCOPES[scope])}, {params(guild_id)}, {params(user_id)}, {params(day)}, {params(amount)})"
        for (scope, guild_id, user_id, day), amount in sorted(deltas.items())
    )
    await conn.execute(_ADD_USAGE_HEAD + rows + _ADD_USAGE_TAIL, *params.values)


class SqlStore(Store):
    """The Store on a SQL database; subclasses provide the connections, transactions and locks."""

    # Values for the ${...} placeholders in migration files: type names, and an expression that differs.
    type_names: ClassVar[Mapping[str, str]]

    @abstractmethod
    def _transaction(self) -> AbstractAsyncContextManager[Connection]:
        """A connection inside a write transaction, committed on success and rolled back on error."""

    @abstractmethod
    def _connection(self) -> AbstractAsyncContextManager[Connection]:
        """A connection for reads outside an explicit transaction."""

    def _report_connection(self) -> AbstractAsyncContextManager[Connection]:
        """A connection for a long read-only query (a period's ledger), outside an explicit transaction:
        ``_connection()``, unless the backend's writers would wait for it there (SQLite's one connection)."""
        return self._connection()

    @abstractmethod
    def _guild_lock_statements(self, guild_id: int, *, everyone: bool) -> list[Statement]:
        """Statements that serialise, until the transaction ends, with every other reservation in the guild
        (and with every reservation in any guild when ``everyone``), so that limits are checked and spent as
        one step. Empty when transactions are serialised anyway."""

    async def _lock_guild(self, conn: Connection, guild_id: int, *, everyone: bool) -> None:
        """Take the guild's lock (see ``_guild_lock_statements``) inside the current transaction."""
        for statement in self._guild_lock_statements(guild_id, everyone=everyone):
            await conn.execute(statement.query, *statement.args)

    async def _atomically(self, statements: Sequence[Statement], *, urgent: bool = False) -> list[list[Any]]:
        """Run ``statements`` in order as one transaction and return each one's rows.

        No Python decides anything between them, so a backend may send them together and commit them with
        other callers' statements (the SQLite store does). Write them so that the transaction is right
        whichever of them finds nothing to do: a later statement checks in SQL what an earlier one did.
        ``urgent``: a step of work under way (a job starting or finishing), which a backend that queues
        transactions lets ahead of new reservations.
        """
        if len(statements) == 1:  # one statement is a transaction by itself
            async with self._connection() as conn:
                return [list(await conn.fetch(statements[0].query, *statements[0].args))]
        async with self._transaction() as conn:
            return [list(await conn.fetch(statement.query, *statement.args)) for statement in statements]

    @abstractmethod
    async def _lock_migrations(self, conn: Connection) -> None:
        """Serialise with any other process migrating the same database, until the transaction ends."""

    @abstractmethod
    async def _run_script(self, conn: Connection, script: str) -> None:
        """Run several ``;``-separated statements inside the current transaction."""

    @abstractmethod
    async def _has_migrations_table(self, conn: Connection) -> bool:
        """Whether schema_migrations exists where the store's queries find it."""

    async def _after_migrations(self, conn: Connection) -> None:
        """Backend-specific objects built on the schema (PostgreSQL's reservation function), inside the migrations'
        transaction and lock, at every start (nothing by default)."""

    async def _migrate(self) -> None:
        """Apply, in one transaction, every migration not yet recorded in schema_migrations."""
        migrations = load_migrations()
        async with self._transaction() as conn:
            await self._lock_migrations(conn)
            # Only on a fresh database: even CREATE ... IF NOT EXISTS takes the right to create in the schema, which
            # a bot whose database an administrator set up (and keeps upgraded) need not have.
            if not await self._has_migrations_table(conn):
                await self._run_script(conn, string.Template(_BOOTSTRAP).substitute(self.type_names))
            applied = {int(row["version"]) for row in await conn.fetch("SELECT version FROM schema_migrations")}
            for migration in migrations:
                if migration.version in applied:
                    continue
                log.info("applying database migration %s", migration.name)
                await self._run_script(conn, migration.render(self.type_names))
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    utc_now(),
                )
            await self._after_migrations(conn)
        unknown = applied - {migration.version for migration in migrations}
        if unknown:
            log.warning("the database has migrations this version does not know: %s", sorted(unknown))

    # Reservations and jobs

    async def reserve(
        self, job: NewJob, checks: Sequence[BudgetCheck], *, now: datetime | None = None, start: bool = False
    ) -> Reserved | Refused:
        now = _moment(now)
        expires = _moment(job.token_expires_at, "token_expires_at")
        if isinstance(job.cost, bool) or not isinstance(job.cost, int) or job.cost < 0:
            raise ValueError(f"a job's cost must be an integer >= 0 (hundredths), not {job.cost!r}")
        for check in checks:
            if check.scope not in SCOPES:
                raise ValueError(f"scope must be one of {', '.join(SCOPES)}, not {check.scope!r}")
            _check_limit(check.limit)
        ordered = tuple(sorted(checks, key=lambda check: SCOPES.index(check.scope)))
        bounds = tuple(period_bounds(check.limit.period, now) for check in ordered)
        return await self._reserve(CheckedReservation(job, ordered, bounds, now, expires, start))

    async def _reserve(self, reservation: CheckedReservation) -> Reserved | Refused:
        """``reserve`` once its arguments are checked."""
        job, now = reservation.job, reservation.now
        # One transaction of statements that decide in SQL, so that the SQLite store sends it in one go and
        # commits it together with the reservations that arrived beside it.
        statements = self._guild_lock_statements(job.guild_id, everyone=reservation.everyone)
        arguments: dict[str, Any] = {
            "guild": job.guild_id,
            "channel": job.channel_id,
            "user": job.user_id,
            "application": job.application_id,
            "interaction": job.interaction_id,
            "token": job.interaction_token,
            "expires": reservation.expires,
            "options": reservation.options,
            "cost": job.cost,
            "now": now,
            "state": reservation.state,
            "started": reservation.started,
        }
        for index, (check, (period_start, period_end)) in enumerate(
            zip(reservation.checks, reservation.bounds, strict=True)
        ):
            arguments[f"start{index}"], arguments[f"end{index}"] = period_start, period_end
            arguments[f"limit{index}"] = check.limit.credits
        sums, insert = _reservation_sql(tuple(check.scope for check in reservation.checks))
        if reservation.checks:
            # What was used before this request: only read when a limit refuses it, to say which and by how much.
            statements.append(Statement(sums.text, tuple(arguments[name] for name in sums.names)))
        statements.append(Statement(insert.text, tuple(arguments[name] for name in insert.names)))
        # Charge the job just inserted, found by its interaction through the (guild, user, created_at) index;
        # nothing when the limits refused it. An interaction makes at most one job, and NOT EXISTS makes
        # sure no job is ever charged twice.
        statements.append(Statement(_CHARGE_RESERVED, (job.guild_id, job.user_id, now, job.interaction_id)))
        statements.append(
            Statement(_ADD_RESERVED_USAGE, (job.guild_id, job.user_id, now, job.interaction_id, day_start(now)))
        )
        results = await self._atomically(statements)
        inserted = results[-3]
        if inserted:
            return Reserved(_job(inserted[0]))
        return reservation.refusal(results[-4][0] if reservation.checks else ())

    async def usage(
        self,
        *,
        guild_id: int,
        user_id: int | None,
        period: Period,
        now: datetime | None = None,
        scope: Scope = "member",
    ) -> int:
        start, end = period_bounds(period, _moment(now))
        params = _Params()
        query = _usage_query(params, scope, guild_id, user_id, start, end)
        async with self._connection() as conn:
            return int(await conn.fetchval(f"SELECT {query}", *params.values))

    async def mark_running(self, job_id: int, *, now: datetime | None = None) -> bool:
        # One atomic UPDATE (group-committed on SQLite with the others of the moment).
        (updated,) = await self._atomically(
            urgent=True,
            statements=[
                Statement(
                    "UPDATE jobs SET state = 'running', started_at = $2 "
                    "WHERE id = $1 AND state = 'queued' RETURNING id",
                    (job_id, _moment(now)),
                )
            ],
        )
        return bool(updated)

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
        if refund < 0:
            raise ValueError(f"a refund is a positive number of hundredths, not {refund}")
        now = _moment(now)
        deliver = Statement(
            "UPDATE jobs SET state = 'delivered', finished_at = $2, result_channel_id = $3, "
            "result_message_id = $4, reported_credits = COALESCE($5, reported_credits), "
            "generator_record_id = COALESCE($6, generator_record_id), result_extra_message_ids = $7 "
            f"WHERE id = $1 AND state IN ({_PENDING}) RETURNING guild_id, user_id, created_at",
            (
                job_id,
                now,
                result_channel_id,
                result_message_id,
                _reported(reported_credits),
                _storable(generator_record_id),
                json.dumps([int(message_id) for message_id in result_extra_message_ids]),
            ),
        )
        if refund:  # rare (the generator sent fewer images than asked): the refund's ledger row goes with it
            async with self._transaction() as conn:
                row = await conn.fetchrow(deliver.query, *deliver.args)
                if row is not None:
                    charged_at = _time(row["created_at"])
                    entry = _NewEntry(row["guild_id"], row["user_id"], job_id, -refund, "refund", charged_at, now, None)
                    await _add_to_ledger(conn, [entry])
            updated: Any = row is not None
        else:
            (updated,) = await self._atomically([deliver], urgent=True)  # one atomic UPDATE, like mark_running
        if not updated:
            log.warning("job %s was not delivered: it had already finished or does not exist", job_id)
        return bool(updated)

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
        if state not in ("failed", "interrupted", "cancelled"):
            raise ValueError(f"a failed job's state must be failed, interrupted or cancelled, not {state!r}")
        now = _moment(now)
        async with self._transaction() as conn:
            # The state guard makes the refund happen at most once, even if two callers race.
            row = await conn.fetchrow(
                "UPDATE jobs SET state = $2, error = $3, finished_at = $4, "
                "reported_credits = COALESCE($5, reported_credits), "
                "generator_record_id = COALESCE($6, generator_record_id) "
                f"WHERE id = $1 AND state IN ({_PENDING}) RETURNING guild_id, user_id, cost, created_at",
                job_id,
                state,
                _storable(error),
                now,
                _reported(reported_credits),
                _storable(generator_record_id),
            )
            if row is None:
                return False
            charged_at = _time(row["created_at"])
            refund = _NewEntry(
                row["guild_id"], row["user_id"], job_id, -int(row["cost"]), "refund", charged_at, now, actor_id
            )
            await _add_to_ledger(conn, [refund])
        return True

    async def set_status_message(self, job_id: int, message_id: int | None) -> None:
        # Group-committed on SQLite with the other writes of the moment, like mark_running.
        await self._atomically(
            [Statement("UPDATE jobs SET status_message_id = $2 WHERE id = $1", (job_id, message_id))]
        )

    async def get_job(self, job_id: int) -> Job | None:
        async with self._connection() as conn:
            row = await conn.fetchrow(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = $1", job_id)
        return None if row is None else _job(row)

    async def jobs_in_states(self, states: Sequence[str]) -> list[Job]:
        if isinstance(states, str):
            raise TypeError("states must be a sequence of state names, not one str")
        if not states:
            return []
        params = _Params()
        placeholders = ", ".join(params(state) for state in states)
        async with self._connection() as conn:
            rows = await conn.fetch(
                f"SELECT {_JOB_COLUMNS} FROM jobs WHERE state IN ({placeholders}) ORDER BY id", *params.values
            )
        return [_job(row) for row in rows]

    async def interrupt_running_jobs(self, *, error: str, now: datetime | None = None) -> list[Job]:
        now = _moment(now)
        async with self._transaction() as conn:
            rows = await conn.fetch(
                "UPDATE jobs SET state = 'interrupted', error = $1, finished_at = $2 "
                f"WHERE state = 'running' RETURNING {_JOB_COLUMNS}",
                error,
                now,
            )
            jobs = sorted((_job(row) for row in rows), key=lambda job: job.id)
            await _add_to_ledger(
                conn,
                [
                    _NewEntry(job.guild_id, job.user_id, job.id, -job.cost, "refund", job.created_at, now)
                    for job in jobs
                ],
            )
        if jobs:
            log.info("interrupted and refunded %d job(s) that were running at the last stop", len(jobs))
        return jobs

    async def recent_jobs(self, *, guild_id: int, user_id: int, limit: int = 5) -> list[Job]:
        async with self._connection() as conn:
            rows = await conn.fetch(
                f"SELECT {_JOB_COLUMNS} FROM jobs WHERE guild_id = $1 AND user_id = $2 ORDER BY id DESC LIMIT $3",
                guild_id,
                user_id,
                limit,
            )
        return [_job(row) for row in rows]

    async def job_refunds(self, *, guild_id: int, job_ids: Sequence[int]) -> dict[int, int]:
        ids = list(dict.fromkeys(job_ids))
        refunds: dict[int, int] = {}
        for first in range(0, len(ids), _IDS_PER_QUERY):
            params = _Params()
            params(guild_id)
            placeholders = ", ".join(params(job_id) for job_id in ids[first : first + _IDS_PER_QUERY])
            # A connection per part, so a long list does not keep SQLite's one connection from writers. Every row
            # of a job is summed in the same part, so each job's total is still read at one moment. "+guild_id":
            # without statistics SQLite would otherwise read the guild's whole ledger through its guild index
            # rather than each job's few rows through ledger_job.
            async with self._connection() as conn:
                rows = await conn.fetch(
                    "SELECT job_id, SUM(amount) AS given FROM ledger "
                    f"WHERE +guild_id = $1 AND reason = 'refund' AND job_id IN ({placeholders}) GROUP BY job_id",
                    *params.values,
                )
            refunds.update((int(row["job_id"]), -int(row["given"])) for row in rows if row["given"])
        return refunds

    # Settings and limits

    async def _read_settings(self, conn: Connection, guild_id: int) -> GuildSettings:
        row = await conn.fetchrow(f"SELECT {_SETTINGS_COLUMNS} FROM guild_settings WHERE guild_id = $1", guild_id)
        role_rows = await conn.fetch("SELECT role_id, credits, period FROM role_limits WHERE guild_id = $1", guild_id)
        exempt_rows = await conn.fetch("SELECT role_id FROM exempt_roles WHERE guild_id = $1", guild_id)
        role_limits = MappingProxyType(
            {int(r["role_id"]): Limit(int(r["credits"]), r["period"]) for r in sorted(role_rows, key=lambda r: r[0])}
        )
        exempt = frozenset(int(r["role_id"]) for r in exempt_rows)
        if row is None:
            return GuildSettings(guild_id, role_limits=role_limits, exempt_role_ids=exempt)
        return GuildSettings(
            guild_id=guild_id,
            default_limit=_limit_or_none(row["default_limit_credits"], row["default_limit_period"]),
            budget=_limit_or_none(row["budget_credits"], row["budget_period"]),
            default_size=row["default_size"],
            default_quality=row["default_quality"],
            default_count=row["default_count"],
            default_format=row["default_format"],
            max_count=row["max_count"],
            mod_role_id=row["mod_role_id"],
            log_channel_id=row["log_channel_id"],
            blocked_words=tuple(json.loads(row["blocked_words"])),
            role_limits=role_limits,
            exempt_role_ids=exempt,
        )

    async def _audit(
        self,
        conn: Connection,
        *,
        guild_id: int,
        actor_id: int,
        action: str,
        target: str | None,
        before: Any,
        after: Any,
        now: datetime,
    ) -> None:
        await conn.execute(
            'INSERT INTO audit_log (guild_id, actor_id, action, target, "before", "after", at) '
            "VALUES ($1, $2, $3, $4, $5, $6, $7)",
            guild_id,
            actor_id,
            action,
            target,
            _json_or_null(before),
            _json_or_null(after),
            now,
        )

    async def get_guild_settings(self, guild_id: int) -> GuildSettings:
        async with self._connection() as conn:
            return await self._read_settings(conn, guild_id)

    async def update_guild_settings(
        self, guild_id: int, *, actor_id: int, action: str, **changes: Any
    ) -> GuildSettings:
        if not changes:
            raise ValueError("update_guild_settings needs at least one setting to change")
        columns: dict[str, Any] = {}
        for name, value in changes.items():
            columns.update(_settings_columns(name, value))
        params = _Params()
        params(guild_id)
        # Column names come from _settings_columns' fixed list, never from the caller.
        assignments = ", ".join(f"{column} = {params(value)}" for column, value in columns.items())
        async with self._transaction() as conn:
            await self._lock_guild(conn, guild_id, everyone=False)
            before = await self._read_settings(conn, guild_id)
            await conn.execute(
                "INSERT INTO guild_settings (guild_id) VALUES ($1) ON CONFLICT (guild_id) DO NOTHING", guild_id
            )
            await conn.execute(f"UPDATE guild_settings SET {assignments} WHERE guild_id = $1", *params.values)
            after = await self._read_settings(conn, guild_id)
            await self._audit(
                conn,
                guild_id=guild_id,
                actor_id=actor_id,
                action=action,
                target="settings",
                before={name: _settings_json(before, name) for name in changes},
                after={name: _settings_json(after, name) for name in changes},
                now=utc_now(),
            )
        return after

    async def member_limits(self, guild_id: int) -> dict[int, Limit]:
        async with self._connection() as conn:
            rows = await conn.fetch("SELECT user_id, credits, period FROM member_limits WHERE guild_id = $1", guild_id)
        return {int(row["user_id"]): Limit(int(row["credits"]), row["period"]) for row in rows}

    async def get_member_limit(self, guild_id: int, user_id: int) -> Limit | None:
        async with self._connection() as conn:
            row = await conn.fetchrow(
                "SELECT credits, period FROM member_limits WHERE guild_id = $1 AND user_id = $2", guild_id, user_id
            )
        return None if row is None else Limit(int(row["credits"]), row["period"])

    async def _set_limit(
        self, table: str, key: str, guild_id: int, target_id: int, limit: Limit | None, *, actor_id: int
    ) -> None:
        if limit is not None:
            _check_limit(limit)
        async with self._transaction() as conn:
            await self._lock_guild(conn, guild_id, everyone=False)
            row = await conn.fetchrow(
                f"SELECT credits, period FROM {table} WHERE guild_id = $1 AND {key} = $2", guild_id, target_id
            )
            before = None if row is None else Limit(int(row["credits"]), row["period"])
            if limit is None:
                await conn.execute(f"DELETE FROM {table} WHERE guild_id = $1 AND {key} = $2", guild_id, target_id)
            else:
                await conn.execute(
                    f"INSERT INTO {table} (guild_id, {key}, credits, period) VALUES ($1, $2, $3, $4) "
                    f"ON CONFLICT (guild_id, {key}) DO UPDATE SET credits = excluded.credits, period = excluded.period",
                    guild_id,
                    target_id,
                    limit.credits,
                    limit.period,
                )
            kind = "member" if table == "member_limits" else "role"
            await self._audit(
                conn,
                guild_id=guild_id,
                actor_id=actor_id,
                action=f"{kind}_limit.{'clear' if limit is None else 'set'}",
                target=f"{kind}:{target_id}",
                before={"limit": _limit_json(before)},
                after={"limit": _limit_json(limit)},
                now=utc_now(),
            )

    async def set_member_limit(self, guild_id: int, user_id: int, limit: Limit | None, *, actor_id: int) -> None:
        await self._set_limit("member_limits", "user_id", guild_id, user_id, limit, actor_id=actor_id)

    async def set_role_limit(self, guild_id: int, role_id: int, limit: Limit | None, *, actor_id: int) -> None:
        await self._set_limit("role_limits", "role_id", guild_id, role_id, limit, actor_id=actor_id)

    async def set_role_exempt(self, guild_id: int, role_id: int, exempt: bool, *, actor_id: int) -> None:
        async with self._transaction() as conn:
            await self._lock_guild(conn, guild_id, everyone=False)
            was = (
                await conn.fetchval(
                    "SELECT role_id FROM exempt_roles WHERE guild_id = $1 AND role_id = $2", guild_id, role_id
                )
                is not None
            )
            if exempt:
                await conn.execute(
                    "INSERT INTO exempt_roles (guild_id, role_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    guild_id,
                    role_id,
                )
            else:
                await conn.execute("DELETE FROM exempt_roles WHERE guild_id = $1 AND role_id = $2", guild_id, role_id)
            await self._audit(
                conn,
                guild_id=guild_id,
                actor_id=actor_id,
                action=f"role_exempt.{'on' if exempt else 'off'}",
                target=f"role:{role_id}",
                before={"exempt": was},
                after={"exempt": bool(exempt)},
                now=utc_now(),
            )

    async def reset_member_usage(
        self, guild_id: int, user_id: int, period: Period, *, actor_id: int, now: datetime | None = None
    ) -> int:
        now = _moment(now)
        start, end = period_bounds(period, now)
        async with self._transaction() as conn:
            await self._lock_guild(conn, guild_id, everyone=False)
            # One statement, so one snapshot on PostgreSQL too: a job refunded between two reads would be counted
            # as used by one and as no longer pending by the other, and given back twice.
            rows = await conn.fetch(
                "SELECT 'used' AS kind, day AS at, amount FROM usage_daily "
                "WHERE scope = 'member' AND guild_id = $1 AND user_id = $2 AND day >= $3 AND day < $4 "
                "UNION ALL SELECT 'pending', created_at, cost FROM jobs WHERE guild_id = $1 AND user_id = $2 "
                f"AND created_at >= $3 AND created_at < $4 AND state IN ({_PENDING})",
                guild_id,
                user_id,
                start,
                end,
            )
            days: dict[datetime, int] = {}
            # Queued and running jobs keep their reservation: they are refunded when they fail, and giving
            # it back here too would refund the same credits twice.
            pending: dict[datetime, int] = {}
            for row in rows:
                tally = pending if row["kind"] == "pending" else days
                day = day_start(_time(row["at"]))
                tally[day] = tally.get(day, 0) + int(row["amount"])
            # Given back day by day, each in its own day: no day's usage goes below zero, so a member whose
            # limit later becomes daily cannot find a day with more credits than the limit.
            entries = []
            used = 0
            for day, amount in days.items():
                used += amount
                if (give := amount - pending.get(day, 0)) > 0:
                    charged_at = now if day == day_start(now) else day  # an earlier day's share: at its start
                    entries.append(_NewEntry(guild_id, user_id, None, -give, "reset", charged_at, now, actor_id))
            given = -sum(entry.amount for entry in entries)
            if entries:
                await _add_to_ledger(conn, entries)
            await self._audit(
                conn,
                guild_id=guild_id,
                actor_id=actor_id,
                action="usage.reset",
                target=f"member:{user_id}",
                before={"period": period, "used": used},
                after={"period": period, "used": used - given},
                now=now,
            )
        return given

    async def ledger(self, *, guild_id: int, since: datetime, until: datetime) -> list[LedgerEntry]:
        async with self._report_connection() as conn:
            rows = await conn.fetch(
                f"SELECT {_LEDGER_COLUMNS} FROM ledger WHERE guild_id = $1 AND charged_at >= $2 AND charged_at < $3 "
                "ORDER BY charged_at, id",
                guild_id,
                _moment(since, "since"),
                _moment(until, "until"),
            )
        # A busy month is hundreds of thousands of rows: read into entries in a thread, not on the loop.
        return await asyncio.to_thread(lambda: [_ledger_entry(row) for row in rows])

    async def usage_by_member(self, *, guild_id: int, since: datetime, until: datetime) -> list[tuple[int, int]]:
        async with self._report_connection() as conn:
            rows = await conn.fetch(
                "SELECT user_id, SUM(amount) AS used FROM ledger "
                "WHERE guild_id = $1 AND charged_at >= $2 AND charged_at < $3 "
                "GROUP BY user_id HAVING SUM(amount) <> 0 ORDER BY used DESC, user_id",
                guild_id,
                _moment(since, "since"),
                _moment(until, "until"),
            )
        return [(int(row["user_id"]), int(row["used"])) for row in rows]

    async def audit_log(self, guild_id: int, limit: int = 50) -> list[AuditEntry]:
        async with self._connection() as conn:
            rows = await conn.fetch(
                'SELECT id, guild_id, actor_id, action, target, "before", "after", at FROM audit_log '
                "WHERE guild_id = $1 ORDER BY id DESC LIMIT $2",
                guild_id,
                limit,
            )
        return [
            AuditEntry(
                id=int(row["id"]),
                guild_id=int(row["guild_id"]),
                actor_id=int(row["actor_id"]),
                action=row["action"],
                target=row["target"],
                before=None if row["before"] is None else json.loads(row["before"]),
                after=None if row["after"] is None else json.loads(row["after"]),
                at=_time(row["at"]),
            )
            for row in rows
        ]

    async def get_state(self, key: str) -> str | None:
        async with self._connection() as conn:
            return await conn.fetchval("SELECT value FROM bot_state WHERE key = $1", key)

    async def set_state(self, key: str, value: str) -> None:
        async with self._transaction() as conn:
            await conn.execute(
                "INSERT INTO bot_state (key, value) VALUES ($1, $2) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                key,
                value,
            )
