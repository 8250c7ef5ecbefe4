"""The store on a SQLite file, through aiosqlite: one shared connection in WAL mode, and a read-only one for reports."""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Any

import aiosqlite

from imaginebot.store.group_commit import GroupCommit
from imaginebot.store.sql import Connection, SqlStore, Statement

log = logging.getLogger(__name__)

_NUMBERED_PARAMETER = re.compile(r"\$(\d+)")


@lru_cache(maxsize=512)
def _sqlite_query(query: str) -> tuple[str, tuple[int, ...]]:
    """The query with each ``$N`` replaced by a plain ``?``, and the index of the argument each ``?`` takes.

    Not SQLite's own ``?N``: Python's sqlite3 takes ``?N`` for a named parameter and refuses a sequence for it
    from Python 3.14 (deprecated since 3.12). A parameter used twice is simply passed twice.
    """
    order: list[int] = []

    def plain(match: re.Match[str]) -> str:
        order.append(int(match.group(1)) - 1)
        return "?"

    return _NUMBERED_PARAMETER.sub(plain, query), tuple(order)


def _sqlite_value(value: Any) -> Any:
    if isinstance(value, datetime):
        # One fixed format, always UTC with microseconds, so that text order is time order.
        return value.astimezone(UTC).isoformat(timespec="microseconds")
    if isinstance(value, Decimal):
        return str(value)
    return value


async def _roll_back(db: aiosqlite.Connection) -> None:
    """End a transaction that failed or was cancelled, before the next one may begin.

    Also when BEGIN or COMMIT itself was cancelled: the statement still runs on aiosqlite's thread, and a
    transaction left open there would make every later write fail ("cannot start a transaction within a
    transaction"). The ROLLBACK is queued behind it, so it always comes after; with nothing open (SQLite rolls
    back by itself after some errors, or BEGIN never ran) it has nothing to do.
    """
    rollback = asyncio.ensure_future(db.execute_fetchall("ROLLBACK"))
    rollback.add_done_callback(lambda done: done.cancelled() or done.exception())  # retrieved even if we are gone
    try:
        await asyncio.shield(rollback)
    except asyncio.CancelledError:
        raise
    except sqlite3.OperationalError:
        pass  # no transaction was open


async def _connect(database: Path | str, **kwargs: Any) -> aiosqlite.Connection:
    """``aiosqlite.connect``, without leaving its worker thread behind when connecting fails.

    aiosqlite stops its thread without waiting for it: if the bot then stops (it cannot start without its
    database), the thread outlives the event loop and prints a traceback over the reason.
    """
    connecting = aiosqlite.connect(database, **kwargs)
    try:
        return await connecting
    except BaseException:
        worker = getattr(connecting, "_thread", None)
        if worker is not None and worker.is_alive():
            await asyncio.to_thread(worker.join, 5)
        raise


def _prepared(query: str, args: Sequence[Any]) -> tuple[str, list[Any]]:
    text, order = _sqlite_query(query)
    return text, [_sqlite_value(args[index]) for index in order]


def split_statements(script: str) -> list[str]:
    """Split a SQL script into statements, each ending with ``;`` at the end of a line."""
    statements: list[str] = []
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip())
            pending = ""
    leftover = "\n".join(
        line for line in pending.splitlines() if line.strip() and not line.strip().startswith("--")
    ).strip()
    if leftover:
        raise ValueError(f"unterminated SQL statement: {leftover[:80]!r}")
    return statements


class _SqliteConnection:
    """aiosqlite behind asyncpg's method names, so the shared SQL runs unchanged."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    async def _run(self, query: str, args: Sequence[Any]) -> list[sqlite3.Row]:
        # execute_fetchall runs and drains the statement in one trip to aiosqlite's thread.
        rows = await self._db.execute_fetchall(*_prepared(query, args))
        return list(rows)

    async def execute(self, query: str, *args: Any) -> None:
        await self._run(query, args)

    async def fetch(self, query: str, *args: Any) -> list[sqlite3.Row]:
        return await self._run(query, args)

    async def fetchrow(self, query: str, *args: Any) -> sqlite3.Row | None:
        rows = await self._run(query, args)
        return rows[0] if rows else None

    async def fetchval(self, query: str, *args: Any) -> Any:
        rows = await self._run(query, args)
        return rows[0][0] if rows else None


class SqliteStore(SqlStore):
    """The store in a SQLite file. One process per file: all work goes through one connection, one
    transaction at a time (an asyncio lock), and writes start with BEGIN IMMEDIATE so that another process
    opening the same file waits instead of interleaving. Transactions that need no Python between their
    statements (reservations, job updates) are group-committed (``store/group_commit.py``).

    Reports (a period's ledger: hundreds of thousands of rows on a busy server, a second or more) read on a
    second, read-only connection instead, opened at the first report: in WAL mode a reader does not block the
    writer, nor the writer it, so reservations go on meanwhile. Without WAL (an in-memory database, whose second
    connection would be a second, empty database; a file SQLite would not switch) a reader would block every
    commit until it finished, so reports share the one connection there."""

    type_names = MappingProxyType(
        {
            "id_pk": "INTEGER PRIMARY KEY AUTOINCREMENT",
            "timestamp": "TEXT",
            "decimal": "TEXT",
            # Times are stored as UTC ISO text (see _sqlite_value): the day is its first ten characters.
            "utc_day_of_charged_at": "substr(charged_at, 1, 10) || 'T00:00:00.000000+00:00'",
        }
    )

    def __init__(self, path: Path | str, *, busy_timeout_ms: int = 5000) -> None:
        """Keep the file's path; nothing is opened until ``open()``."""
        self.path = Path(path)
        self._busy_timeout_ms = busy_timeout_ms
        self._db: aiosqlite.Connection | None = None
        self._conn: _SqliteConnection | None = None
        self._wal = False
        # The reports' connection (see the class docstring), and the lock that opens and closes it.
        self._reader: aiosqlite.Connection | None = None
        self._reader_lock = asyncio.Lock()
        # The connection is shared, so a transaction must not see another coroutine's statements.
        self._lock = asyncio.Lock()
        self._group_commit = GroupCommit(self._lock, lambda: self._connected()[0])

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r})"

    async def open(self) -> None:
        """Create the file (and its directory) if needed, connect, and apply migrations."""
        if self._db is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: no implicit transactions; every transaction here is explicit.
        db = await _connect(self.path, isolation_level=None)
        try:
            db.row_factory = aiosqlite.Row
            await db.execute_fetchall(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
            self._wal = await self._enable_wal(db)
            if not self._wal and str(self.path) != ":memory:":
                log.warning("SQLite could not use WAL mode for %s: reports will hold up reservations", self.path)
            # WAL with synchronous=NORMAL stays consistent after a crash; only the last commits may be lost.
            await db.execute_fetchall("PRAGMA synchronous = NORMAL")
            await db.execute_fetchall("PRAGMA foreign_keys = ON")
            self._db, self._conn = db, _SqliteConnection(db)
            await self._migrate()
        except BaseException:
            self._db = self._conn = None
            await db.close()
            raise
        log.info("opened SQLite store at %s", self.path)

    async def _enable_wal(self, db: aiosqlite.Connection) -> bool:
        """Switch the file to WAL mode, waiting out another opener that holds the lock; whether it is in WAL mode
        now (an in-memory database never is).

        Changing the journal mode does not go through SQLite's busy handler: while another connection is
        migrating a fresh file, it fails at once with "database is locked" instead of waiting busy_timeout.
        """
        deadline = time.monotonic() + self._busy_timeout_ms / 1000
        while True:
            try:
                [(mode,)] = await db.execute_fetchall("PRAGMA journal_mode = WAL")
                return str(mode).lower() == "wal"
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.02)

    async def close(self) -> None:
        """Close the connections (safe to call twice), once the work already sent to them is done."""
        if self._db is not None:
            await self._group_commit.drain()
        db, self._db, self._conn = self._db, None, None
        try:
            async with self._reader_lock:
                reader, self._reader = self._reader, None
                if reader is not None:
                    await reader.close()
        finally:
            if db is not None:
                async with self._lock:
                    await db.close()

    def _connected(self) -> tuple[aiosqlite.Connection, _SqliteConnection]:
        if self._db is None or self._conn is None:
            raise RuntimeError("the store is not open: call `await store.open()` first")
        return self._db, self._conn

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[Connection]:
        async with self._lock:
            db, conn = self._connected()
            try:
                await db.execute_fetchall("BEGIN IMMEDIATE")
                yield conn
                await db.execute_fetchall("COMMIT")
            except BaseException:
                await _roll_back(db)
                raise

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Connection]:
        async with self._lock:
            yield self._connected()[1]

    @asynccontextmanager
    async def _report_connection(self) -> AsyncIterator[Connection]:
        reader = await self._open_reader()
        if reader is None:
            async with self._connection() as conn:
                yield conn
        else:
            # Not under the store's lock: that is the point. aiosqlite runs the reader's statements one at a
            # time on its own thread, and each one alone reads one snapshot of the database.
            yield _SqliteConnection(reader)

    async def _open_reader(self) -> aiosqlite.Connection | None:
        """The reports' read-only connection, opened at the first report; None when reports must share the main
        connection (no WAL, see the class docstring)."""
        self._connected()
        if not self._wal:
            return None
        async with self._reader_lock:
            self._connected()  # the store may have been closed while this waited
            if self._reader is None:
                # A URI, for mode=ro; as_uri() quotes what a path may hold that a URI may not ("?", "#", "%").
                reader = await _connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
                try:
                    reader.row_factory = aiosqlite.Row
                    await reader.execute_fetchall(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
                except BaseException:
                    await reader.close()
                    raise
                self._reader = reader
            return self._reader

    def _guild_lock_statements(self, guild_id: int, *, everyone: bool) -> list[Statement]:
        # Nothing to add: the asyncio lock and BEGIN IMMEDIATE already make every write transaction exclusive.
        return []

    async def _atomically(self, statements: Sequence[Statement], *, urgent: bool = False) -> list[list[Any]]:
        self._connected()
        prepared = [_prepared(statement.query, statement.args) for statement in statements]
        return await self._group_commit.run(prepared, urgent=urgent)

    async def _lock_migrations(self, conn: Connection) -> None:
        # BEGIN IMMEDIATE already holds the database's write lock.
        return None

    async def _has_migrations_table(self, conn: Connection) -> bool:
        rows = await conn.fetch("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'")
        return bool(rows)

    async def _run_script(self, conn: Connection, script: str) -> None:
        # Not executescript(): it would commit the transaction the migration runs in.
        for statement in split_statements(script):
            await conn.execute(statement)
