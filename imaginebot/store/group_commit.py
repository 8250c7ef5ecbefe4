"""Group commit on one aiosqlite connection: write transactions that arrive together are sent and committed together.

aiosqlite runs each statement on its own thread and hands the result back through the event loop, so a
transaction of five statements costs five trips and five turns of a busy loop, one transaction after another.
A transaction whose statements need no Python between them (``SqlStore._atomically``) is instead queued here;
one writer takes everything queued, sends ``BEGIN``, all of their statements and waits once, then commits
once. During a burst of hundreds of ``/imagine`` the reservations go to the database in a few batches instead
of thousands of trips.

Each caller still gets only its own rows, or its own error. If a statement fails, the whole batch is rolled
back, the caller whose statement failed gets that error and the others are run again in the next batch (once:
if that batch fails too, they get its error).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiosqlite

log = logging.getLogger(__name__)

# (query with ? parameters, parameters) as sqlite3 takes them
Prepared = tuple[str, Sequence[Any]]
Rows = list[sqlite3.Row]

_BEGIN: Prepared = ("BEGIN IMMEDIATE", ())
_COMMIT: Prepared = ("COMMIT", ())
_ROLLBACK: Prepared = ("ROLLBACK", ())
_ATTEMPTS = 2
# At most this many transactions per batch: the callers of a batch all resume in the same turn of the event
# loop, and hundreds at once (each then starting an HTTP request, say) would stall it; smaller batches also let
# the first requests of a burst move on while later ones are still being written.
MAX_BATCH = 16
# Places in a batch kept for urgent transactions (work under way) while new ones wait: measured in the 500-member
# burst, a quarter lets started jobs reach the generator ~0.2 s sooner at the median without holding up the
# answers to the burst much (half of the batch pushed the last answer past 500 ms).
URGENT_SHARE = MAX_BATCH // 4


class BatchRolledBack(Exception):
    """A caller's statements were fine but were rolled back with a batch that failed, twice."""


@dataclass(eq=False)
class _Unit:
    statements: list[Prepared]
    done: asyncio.Future[list[Rows]]
    urgent: bool = False
    attempts: int = field(default=0)

    def finish(self, result: list[Rows] | BaseException) -> None:
        if self.done.done():  # the caller was cancelled; its transaction still happened (or not) as reported
            return
        if isinstance(result, BaseException):
            self.done.set_exception(result)
        else:
            self.done.set_result(result)


async def _pipeline(db: aiosqlite.Connection, statements: Sequence[Prepared]) -> list[Rows | BaseException]:
    """Queue every statement on aiosqlite's thread at once (in order) and wait for all of them."""
    # Each task's first step puts its statement on aiosqlite's queue; the tasks start in creation order and
    # nothing else can use the connection meanwhile (the caller holds the store's lock).
    tasks = [asyncio.ensure_future(db.execute_fetchall(query, args)) for query, args in statements]
    return list(await asyncio.gather(*tasks, return_exceptions=True))


class GroupCommit:
    """The writer behind ``SqliteStore._atomically``: one batch at a time, under the store's lock."""

    def __init__(self, lock: asyncio.Lock, connected: Callable[[], aiosqlite.Connection]) -> None:
        """``lock`` serialises everything done on the connection; ``connected()`` returns the open connection."""
        self._lock = lock
        self._connected = connected
        self._waiting: list[_Unit] = []
        self._writer: asyncio.Task[None] | None = None
        self.batches = 0  # how many transactions were committed or tried (for tests and logs)

    async def run(self, statements: Sequence[Prepared], *, urgent: bool = False) -> list[Rows]:
        """Run ``statements`` as (part of) one transaction; each statement's rows, in order.

        ``urgent`` ones (work already under way, such as a job about to be sent to the generator) get a share of
        every batch (URGENT_SHARE), so they do not wait behind a burst of new reservations.
        """
        unit = _Unit(list(statements), asyncio.get_running_loop().create_future(), urgent=urgent)
        self._waiting.append(unit)
        if self._writer is None:
            self._writer = asyncio.create_task(self._write(), name="sqlite-group-commit")
        return await unit.done

    async def drain(self) -> None:
        """Wait until everything queued so far is committed (or has failed)."""
        while self._writer is not None:
            await asyncio.shield(self._writer)

    async def _write(self) -> None:
        try:
            while self._waiting:
                batch = self._next_batch()
                try:
                    retry = await self._commit(batch)
                except BaseException as error:
                    for unit in batch:
                        unit.finish(error)
                    raise
                # Put back in front: they came first.
                self._waiting[:0] = retry
        except BaseException as error:
            for unit in self._waiting:
                unit.finish(error if isinstance(error, Exception) else RuntimeError("the store was closed"))
            self._waiting = []
            if not isinstance(error, asyncio.CancelledError):
                log.exception("the SQLite group commit stopped")
        finally:
            self._writer = None

    def _next_batch(self) -> list[_Unit]:
        """Up to MAX_BATCH waiting units: urgent ones first, URGENT_SHARE of them when others wait too, so that
        neither a burst of new reservations nor the work they start holds the other back."""
        urgent = [unit for unit in self._waiting if unit.urgent]
        others = [unit for unit in self._waiting if not unit.urgent]
        take_urgent = min(len(urgent), max(URGENT_SHARE, MAX_BATCH - len(others)))
        batch = urgent[:take_urgent] + others[: MAX_BATCH - take_urgent]
        chosen = {id(unit) for unit in batch}
        self._waiting = [unit for unit in self._waiting if id(unit) not in chosen]
        return batch

    async def _commit(self, batch: list[_Unit]) -> list[_Unit]:
        """One transaction for the whole batch; returns the units to run again."""
        async with self._lock:
            db = self._connected()
            self.batches += 1
            results = await _pipeline(db, [_BEGIN, *(statement for unit in batch for statement in unit.statements)])
            began, results = results[0], results[1:]
            if isinstance(began, BaseException):
                for unit in batch:
                    unit.finish(began)
                return []
            per_unit: list[list[Rows | BaseException]] = []
            for unit in batch:
                per_unit.append(results[: len(unit.statements)])
                results = results[len(unit.statements) :]
            errors = [next((r for r in rows if isinstance(r, BaseException)), None) for rows in per_unit]
            if all(error is None for error in errors):
                (committed,) = await _pipeline(db, [_COMMIT])
                if isinstance(committed, BaseException):
                    await self._roll_back(db)
                    for unit in batch:
                        unit.finish(committed)
                    return []
                for unit, rows in zip(batch, per_unit, strict=True):
                    unit.finish([row for row in rows if not isinstance(row, BaseException)])
                return []
            if db.in_transaction:
                await self._roll_back(db)
            else:
                # SQLite ends a transaction by itself on a few errors (disk full, I/O error): the statements
                # queued after that ran on their own, so nothing can be safely run again.
                log.error("SQLite rolled back a batch of %d transactions by itself; none is retried", len(batch))
                first = next(error for error in errors if error is not None)
                for unit, error in zip(batch, errors, strict=True):
                    unit.finish(error or first)
                return []
        retry: list[_Unit] = []
        first = next(error for error in errors if error is not None)
        for unit, error in zip(batch, errors, strict=True):
            if error is not None:
                unit.finish(error)
            elif unit.attempts + 1 >= _ATTEMPTS:
                unit.finish(BatchRolledBack(f"rolled back with a batch that failed: {first}"))
            else:
                unit.attempts += 1
                retry.append(unit)
        return retry

    @staticmethod
    async def _roll_back(db: aiosqlite.Connection) -> None:
        if db.in_transaction:
            (outcome,) = await _pipeline(db, [_ROLLBACK])
            if isinstance(outcome, BaseException):
                log.error("ROLLBACK failed: %s", outcome)
