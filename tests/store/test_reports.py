"""Reports (a period's ledger, /quota report) on SQLite: read beside the writes, not in their way."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiosqlite
import pytest

from imaginebot.store import NewJob, Reserved, SqliteStore
from tests.store.conftest import GUILD, NOW, USER

NewJobFactory = Callable[..., NewJob]

SINCE, UNTIL = NOW - timedelta(days=1), NOW + timedelta(days=1)
# A busy server's month is hundreds of thousands of rows; enough of them to read for a while.
LEDGER_ROWS = 100_000
MEMBERS = 50


class HeldRead:
    """Holds the next SELECT from the ledger in the middle of its run, on whichever connection runs it, until
    released: a slow read that takes exactly as long as the test needs, on a busy machine too.

    ``install`` goes into every SQLite connection opened while the test runs: a trace callback notes the statement
    the connection starts, and its progress handler (called every thousand steps of SQLite's virtual machine, so
    once the statement has begun reading) waits there while that statement is a read of the ledger and the hold
    is armed.
    """

    def __init__(self) -> None:
        self._armed = False
        self._arming = threading.Lock()
        self.reached = threading.Event()
        self.released = threading.Event()

    def arm(self) -> None:
        with self._arming:
            self._armed = True

    def install(self, conn: sqlite3.Connection) -> None:
        running = ""

        def trace(statement: str) -> None:
            nonlocal running
            running = statement

        def progress() -> int:
            if running.lstrip().upper().startswith("SELECT") and " FROM ledger " in running:
                with self._arming:
                    holding, self._armed = self._armed, False
                if holding:
                    self.reached.set()
                    self.released.wait(60)
            return 0  # go on

        conn.set_trace_callback(trace)
        conn.set_progress_handler(progress, 1000)


@pytest.fixture
def held_read(monkeypatch: pytest.MonkeyPatch) -> Iterator[HeldRead]:
    """A HeldRead installed in every SQLite connection opened from now on (aiosqlite opens them with
    sqlite3.connect); released at the end whatever happened, so no connection's thread stays stuck."""
    hold = HeldRead()
    connect = sqlite3.connect

    def connect_with_hold(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = connect(*args, **kwargs)
        hold.install(conn)
        return conn

    monkeypatch.setattr(sqlite3, "connect", connect_with_hold)
    yield hold
    hold.released.set()


async def fill_ledger(path: Path, rows: int) -> None:
    """``rows`` ledger charges of 1 credit in GUILD through the day of NOW, in one statement beside the store.
    Only the ledger: the reads under test do not look at the per-day totals."""
    async with aiosqlite.connect(path) as db:
        await db.execute(
            "INSERT INTO ledger (guild_id, user_id, job_id, amount, reason, charged_at, created_at, actor_id) "
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
            "SELECT ?, ? + i % ?, NULL, 100, 'reserve', at, at, NULL FROM "
            "(SELECT i, strftime('%Y-%m-%dT%H:%M:%S', ?, '+' || (i * 86399 / ?) || ' seconds') "
            "|| '.000000+00:00' AS at FROM n)",
            (rows, GUILD, USER, MEMBERS, NOW.strftime("%Y-%m-%d 00:00:00"), rows),
        )
        await db.commit()


@pytest.mark.parametrize("report", ["ledger", "usage_by_member"])
async def test_a_reservation_goes_ahead_while_a_report_reads_the_ledger(
    tmp_path: Path, held_read: HeldRead, new_job: NewJobFactory, report: str
) -> None:
    store = SqliteStore(tmp_path / "store.db")
    await store.open()
    try:
        await fill_ledger(store.path, LEDGER_ROWS)
        held_read.arm()
        reading = asyncio.create_task(getattr(store, report)(guild_id=GUILD, since=SINCE, until=UNTIL))
        reserving: asyncio.Task[Any] | None = None
        try:
            assert await asyncio.to_thread(held_read.reached.wait, 30), "the report never started reading"
            reserving = asyncio.create_task(store.reserve(new_job(), [], now=NOW))
            # It takes milliseconds; the read is held until released below, however long this waits.
            done, _ = await asyncio.wait([reserving], timeout=15)
            assert reserving in done, "the reservation waited for the report's read to finish"
            assert isinstance(reserving.result(), Reserved)
            assert not reading.done()
        finally:
            held_read.released.set()
            result = await reading
            if reserving is not None:
                await reserving
    finally:
        await store.close()

    # The read saw the ledger as it was when it began: without the reservation committed meanwhile.
    if report == "ledger":
        assert len(result) == LEDGER_ROWS
        assert [entry.charged_at for entry in result] == sorted(entry.charged_at for entry in result)
    else:
        assert sum(used for _, used in result) == LEDGER_ROWS * 100
        assert len(result) == MEMBERS


async def test_an_in_memory_store_reads_its_reports_on_its_one_connection(new_job: NewJobFactory) -> None:
    # A second connection to ":memory:" would be a second, empty database.
    store = SqliteStore(":memory:")
    await store.open()
    try:
        reserved = await store.reserve(new_job(cost=250), [], now=NOW)
        assert isinstance(reserved, Reserved)
        [entry] = await store.ledger(guild_id=GUILD, since=SINCE, until=UNTIL)
        assert (entry.job_id, entry.amount) == (reserved.job.id, 250)
        assert await store.usage_by_member(guild_id=GUILD, since=SINCE, until=UNTIL) == [(USER, 250)]
    finally:
        await store.close()


async def test_reports_read_the_stores_own_file_whatever_its_path(tmp_path: Path, new_job: NewJobFactory) -> None:
    # The report's connection opens the file by URI, where "?", "#" and "%" mean something.
    store = SqliteStore(tmp_path / "a b?c#d%41e" / "store.db")
    await store.open()
    try:
        reserved = await store.reserve(new_job(cost=250), [], now=NOW)
        assert isinstance(reserved, Reserved)
        [entry] = await store.ledger(guild_id=GUILD, since=SINCE, until=UNTIL)
        assert entry.job_id == reserved.job.id
    finally:
        await store.close()


async def test_reports_see_what_was_written_since_the_last_report_and_after_a_reopen(
    tmp_path: Path, new_job: NewJobFactory
) -> None:
    store = SqliteStore(tmp_path / "store.db")
    await store.open()
    try:
        assert await store.ledger(guild_id=GUILD, since=SINCE, until=UNTIL) == []
        await store.reserve(new_job(cost=100), [], now=NOW)
        assert len(await store.ledger(guild_id=GUILD, since=SINCE, until=UNTIL)) == 1
        await store.close()
        await store.close()
        with pytest.raises(RuntimeError, match="not open"):
            await store.ledger(guild_id=GUILD, since=SINCE, until=UNTIL)
        await store.open()
        await store.reserve(new_job(cost=200), [], now=NOW)
        assert [entry.amount for entry in await store.ledger(guild_id=GUILD, since=SINCE, until=UNTIL)] == [100, 200]
    finally:
        await store.close()
