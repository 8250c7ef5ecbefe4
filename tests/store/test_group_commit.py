"""The SQLite group commit: many transactions per batch, each caller gets its own rows or its own error."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import aiosqlite
import pytest

from imaginebot.store.group_commit import MAX_BATCH, URGENT_SHARE, GroupCommit, NotRun, run_batch


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[aiosqlite.Connection]:
    connection = await aiosqlite.connect(tmp_path / "t.db", isolation_level=None)
    await connection.execute_fetchall("CREATE TABLE t (k INTEGER PRIMARY KEY, v INTEGER NOT NULL CHECK (v >= 0))")
    yield connection
    await connection.close()


def writer(db: aiosqlite.Connection) -> GroupCommit:
    return GroupCommit(asyncio.Lock(), lambda: db)


def insert(key: int, value: int) -> tuple[str, tuple[int, int]]:
    return ("INSERT INTO t (k, v) VALUES (?, ?) RETURNING k", (key, value))


async def rows(db: aiosqlite.Connection) -> list[tuple[int, int]]:
    return [tuple(row) for row in await db.execute_fetchall("SELECT k, v FROM t ORDER BY k")]


async def test_transactions_arriving_together_are_committed_in_few_batches(db: aiosqlite.Connection) -> None:
    commit = writer(db)

    results = await asyncio.gather(
        *(commit.run([insert(key, key), ("SELECT count(*) FROM t", ())]) for key in range(100))
    )

    # Each caller sees its own INSERT ... RETURNING, and the count includes everything committed before it.
    assert [result[0][0][0] for result in results] == list(range(100))
    assert [result[1][0][0] for result in results] == list(range(1, 101))
    assert await rows(db) == [(key, key) for key in range(100)]
    assert commit.batches <= 1 + -(-100 // MAX_BATCH)
    assert not db.in_transaction


async def test_a_failing_statement_fails_only_its_caller(db: aiosqlite.Connection) -> None:
    commit = writer(db)
    # The bad caller's first statement succeeds and its second breaks the CHECK: neither may stay.
    bad = [insert(1000, 1), insert(1001, -1)]

    results = await asyncio.gather(
        *(commit.run([insert(key, key)]) for key in range(7)),
        commit.run(bad),
        *(commit.run([insert(key, key)]) for key in range(7, 14)),
        return_exceptions=True,
    )

    assert isinstance(results[7], sqlite3.IntegrityError)
    assert all(isinstance(result, list) for index, result in enumerate(results) if index != 7)
    assert await rows(db) == [(key, key) for key in range(14)]
    assert commit.batches == 1  # the bad caller was rolled back to its savepoint, alone
    assert not db.in_transaction


def test_a_batch_without_failures_runs_only_its_statements(tmp_path: Path) -> None:
    # Savepoints are only for isolating a failure: the usual batch is BEGIN, the statements, COMMIT.
    conn = sqlite3.connect(tmp_path / "t.db", isolation_level=None)
    conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v INTEGER NOT NULL CHECK (v >= 0))")
    sent: list[str] = []
    conn.set_trace_callback(sent.append)

    outcomes = run_batch(conn, [[insert(1, 1)], [insert(2, 2), ("SELECT count(*) FROM t", ())]])

    assert outcomes == [[[(1,)]], [[(2,)], [(2,)]]]
    assert [statement.split()[0] for statement in sent] == ["BEGIN", "INSERT", "INSERT", "SELECT", "COMMIT"]


def test_when_sqlite_ends_the_transaction_itself_no_caller_is_told_it_committed(tmp_path: Path) -> None:
    # Disk full or an I/O error makes SQLite roll the whole transaction back: simulated here by a statement
    # that ends the transaction itself. Nothing before it stayed, and nothing after it ran.
    conn = sqlite3.connect(tmp_path / "t.db", isolation_level=None)
    conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v INTEGER NOT NULL CHECK (v >= 0))")

    outcomes = run_batch(conn, [[insert(1, 1)], [("ROLLBACK", ()), ("SELECT nope", ())], [insert(2, 2)]])

    assert isinstance(outcomes[0], NotRun) and isinstance(outcomes[2], NotRun)
    assert isinstance(outcomes[1], sqlite3.Error)
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,) and not conn.in_transaction


async def test_a_caller_that_stops_waiting_does_not_hold_up_the_others(db: aiosqlite.Connection) -> None:
    commit = writer(db)
    impatient = asyncio.create_task(commit.run([insert(1, 1)]))
    others = [asyncio.create_task(commit.run([insert(key, key)])) for key in range(2, 6)]
    await asyncio.sleep(0)
    impatient.cancel()

    await asyncio.gather(*others)
    await commit.drain()

    # The transaction was already queued: it is committed, as a crash right after it would also leave it.
    assert await rows(db) == [(key, key) for key in range(1, 6)]


async def test_drain_waits_for_everything_queued(db: aiosqlite.Connection) -> None:
    commit = writer(db)
    tasks = [asyncio.create_task(commit.run([insert(key, key)])) for key in range(30)]
    await asyncio.sleep(0)

    await commit.drain()

    assert all(task.done() for task in tasks)
    assert len(await rows(db)) == 30


async def test_a_burst_is_split_into_batches_of_at_most_max_batch(db: aiosqlite.Connection) -> None:
    commit = writer(db)

    await asyncio.gather(*(commit.run([insert(key, key)]) for key in range(5 * MAX_BATCH)))

    # All were queued before the writer first ran: full batches.
    assert commit.batches == 5
    assert len(await rows(db)) == 5 * MAX_BATCH


async def test_urgent_work_gets_its_share_of_every_batch_during_a_burst(db: aiosqlite.Connection) -> None:
    commit = writer(db)
    order: list[int] = []

    async def one(key: int, *, urgent: bool) -> None:
        await commit.run([insert(key, key)], urgent=urgent)
        order.append(key)

    # A burst of new work queued first (the first batch starts at once), then urgent work (keys 1000+).
    tasks = [asyncio.create_task(one(key, urgent=False)) for key in range(4 * MAX_BATCH)]
    await asyncio.sleep(0)
    tasks += [asyncio.create_task(one(1000 + key, urgent=True)) for key in range(2 * URGENT_SHARE)]
    await asyncio.gather(*tasks)

    # After the batch already under way, each batch starts with URGENT_SHARE urgent ones; both keep their order.
    second, third = order[MAX_BATCH : 2 * MAX_BATCH], order[2 * MAX_BATCH : 3 * MAX_BATCH]
    assert [key >= 1000 for key in second] == [True] * URGENT_SHARE + [False] * (MAX_BATCH - URGENT_SHARE)
    assert [key >= 1000 for key in third] == [True] * URGENT_SHARE + [False] * (MAX_BATCH - URGENT_SHARE)
    assert [key for key in order if key >= 1000] == [1000 + key for key in range(2 * URGENT_SHARE)]
    assert [key for key in order if key < 1000] == list(range(4 * MAX_BATCH))
    assert len(await rows(db)) == 4 * MAX_BATCH + 2 * URGENT_SHARE
