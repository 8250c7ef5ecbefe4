"""Group commit on one aiosqlite connection: write transactions that arrive together are committed together.

aiosqlite runs each statement on its own thread and hands the result back through the event loop, so a
transaction of five statements costs five trips and five turns of a busy loop, one transaction after another.
A transaction whose statements need no Python between them (``SqlStore._atomically``) is instead queued here;
one writer takes what is queued and runs it as one function on aiosqlite's thread: ``BEGIN``, each caller's
statements, ``COMMIT``: one trip for the whole batch. During a burst of hundreds of ``/imagine`` the
reservations reach the database in a few dozen trips instead of thousands.

Each caller gets only its own rows, or its own error: when a statement fails, the batch is undone and run
again with each caller in a savepoint of its own, so that the failing caller is rolled back alone. If the
commit itself fails, every caller of the batch gets that error.

aiosqlite has no public call for "run this function on your thread", so this uses ``Connection._execute`` (the
method every aiosqlite call goes through, unchanged since 0.17) and ``Connection._conn``; the store tests run
through it, so a change in aiosqlite shows up there first.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiosqlite

log = logging.getLogger(__name__)

# (query with ? parameters, parameters) as sqlite3 takes them
Prepared = tuple[str, Sequence[Any]]
Rows = list[sqlite3.Row]
# What a caller gets: its statements' rows, or the error that undid its transaction.
Outcome = list[Rows] | BaseException

# At most this many transactions per batch: the callers of a batch all resume in the same turn of the event
# loop, and hundreds at once (each then starting an HTTP request, say) would stall it; smaller batches also let
# the first requests of a burst move on while later ones are still being written.
MAX_BATCH = 16
# Places in a batch that urgent units (work under way) take first while new reservations wait. Measured in the
# 500-member burst (first response p99 / end-to-end p50 / p99 over latency): a quarter 230-250 ms / 1.07 / 1.11;
# half 360-390 ms / 1.05-1.06 / 1.09; all of it 390-510 ms / 1.06-1.07 / 1.09-1.11. The answers have Discord's
# hard 3-second deadline (and against the real 1min.ai every job start also pays a TLS handshake), while a job
# start ~50 ms later is nothing next to a generation of 30 s or more: a quarter.
URGENT_SHARE = MAX_BATCH // 4


class NotRun(Exception):
    """SQLite ended the batch's transaction by itself (disk full, I/O error) before this caller's turn."""


@dataclass(eq=False)
class _Unit:
    statements: list[Prepared]
    done: asyncio.Future[list[Rows]]

    def finish(self, outcome: Outcome) -> None:
        if self.done.done():  # the caller was cancelled; its transaction still happened (or not) as reported
            return
        if isinstance(outcome, BaseException):
            self.done.set_exception(outcome)
        else:
            self.done.set_result(outcome)


def run_batch(conn: sqlite3.Connection, units: Sequence[Sequence[Prepared]]) -> list[Outcome]:
    """One transaction for ``units`` (each a list of statements); runs on the connection's thread. A unit whose
    statement fails gets the error, alone: the batch is then undone and run again with a savepoint per unit
    (``run_isolated``). Failures are rare, so the usual batch pays for no savepoints (a third of its statements).
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        try:
            outcomes: list[Outcome] = [[conn.execute(query, args).fetchall() for query, args in unit] for unit in units]
        except sqlite3.Error:
            _roll_back(conn)
            return run_isolated(conn, units)
        conn.execute("COMMIT")
    except BaseException:
        _roll_back(conn)
        raise
    return outcomes


def run_isolated(conn: sqlite3.Connection, units: Sequence[Sequence[Prepared]]) -> list[Outcome]:
    """One transaction for ``units``, each in a savepoint of its own: a unit whose statement fails is rolled back
    to its savepoint and gets the error; the others commit."""
    outcomes: list[Outcome] = []
    conn.execute("BEGIN IMMEDIATE")
    try:
        for unit in units:
            conn.execute("SAVEPOINT unit")
            try:
                outcomes.append([conn.execute(query, args).fetchall() for query, args in unit])
            except sqlite3.Error as error:
                if not conn.in_transaction:
                    # SQLite rolled the whole transaction back by itself: the units before this one are lost.
                    lost = NotRun(f"rolled back by SQLite with the rest of its batch: {error}")
                    return [lost] * len(outcomes) + [error] + [lost] * (len(units) - len(outcomes) - 1)
                conn.execute("ROLLBACK TO unit")
                outcomes.append(error)
            conn.execute("RELEASE unit")
        conn.execute("COMMIT")
    except BaseException:
        _roll_back(conn)
        raise
    return outcomes


def _roll_back(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:  # SQLite may have rolled back by itself already
        conn.execute("ROLLBACK")


class GroupCommit:
    """The writer behind ``SqliteStore._atomically``: one batch at a time, under the store's lock."""

    def __init__(self, lock: asyncio.Lock, connected: Callable[[], aiosqlite.Connection]) -> None:
        """``lock`` serialises everything done on the connection; ``connected()`` returns the open connection."""
        self._lock = lock
        self._connected = connected
        # Waiting units, urgent ones apart, each in arrival order: a batch takes from the front of both.
        self._urgent: deque[_Unit] = deque()
        self._others: deque[_Unit] = deque()
        self._writer: asyncio.Task[None] | None = None
        self.batches = 0  # how many transactions were committed or tried (for tests and logs)

    async def run(self, statements: Sequence[Prepared], *, urgent: bool = False) -> list[Rows]:
        """Run ``statements`` as (part of) one transaction; each statement's rows, in order.

        ``urgent`` ones (work already under way, such as a job about to be sent to the generator) get the first
        URGENT_SHARE places of every batch (all of it when nothing else waits), so they do not wait behind a
        burst of new reservations.
        """
        unit = _Unit(list(statements), asyncio.get_running_loop().create_future())
        (self._urgent if urgent else self._others).append(unit)
        if self._writer is None:
            self._writer = asyncio.create_task(self._write(), name="sqlite-group-commit")
        return await unit.done

    async def drain(self) -> None:
        """Wait until everything queued so far is committed (or has failed)."""
        while self._writer is not None:
            await asyncio.shield(self._writer)

    async def _write(self) -> None:
        try:
            while self._urgent or self._others:
                batch = self._next_batch()
                try:
                    outcomes = await self._commit(batch)
                except BaseException as error:
                    for unit in batch:
                        unit.finish(error)
                    raise
                for unit, outcome in zip(batch, outcomes, strict=True):
                    unit.finish(outcome)
        except BaseException as error:
            for unit in (*self._urgent, *self._others):
                unit.finish(error if isinstance(error, Exception) else RuntimeError("the store was closed"))
            self._urgent.clear()
            self._others.clear()
            if not isinstance(error, asyncio.CancelledError):
                log.exception("the SQLite group commit stopped")
        finally:
            self._writer = None

    def _next_batch(self) -> list[_Unit]:
        """Up to MAX_BATCH waiting units: urgent ones first, URGENT_SHARE of them when others wait too (each
        group in its own order), so that neither a burst of new reservations nor the work they start holds the
        other back. Taken from the front of each queue: a deep backlog costs nothing per batch."""
        take_urgent = min(len(self._urgent), max(URGENT_SHARE, MAX_BATCH - len(self._others)))
        batch = [self._urgent.popleft() for _ in range(take_urgent)]
        batch += [self._others.popleft() for _ in range(min(len(self._others), MAX_BATCH - take_urgent))]
        return batch

    async def _commit(self, batch: list[_Unit]) -> list[Outcome]:
        async with self._lock:
            db = self._connected()
            self.batches += 1
            units = [unit.statements for unit in batch]
            # aiosqlite private API, see the module docstring.
            return await db._execute(lambda: run_batch(db._conn, units))
