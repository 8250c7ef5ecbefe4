"""Migrations apply once, on a fresh database and on every later start; opening and closing."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiosqlite
import asyncpg
import pytest

from imaginebot.store import NewJob, PostgresStore, Reserved, SqliteStore, Store, open_store
from imaginebot.store import postgres as postgres_module
from imaginebot.store.sql import load_migrations
from imaginebot.store.sqlite import _prepared, split_statements
from tests.store.conftest import NOW, StoreFactory, postgres_url, run_around_the_store


def test_migrations_are_numbered_from_one_without_gaps() -> None:
    versions = [migration.version for migration in load_migrations()]
    assert versions == list(range(1, len(versions) + 1))
    assert load_migrations()[0].name == "0001_initial"


async def test_reopening_applies_nothing_twice_and_keeps_the_data(
    store_factory: StoreFactory, new_job: Callable[..., NewJob]
) -> None:
    first = store_factory()
    await first.open()
    await first.open()  # a second open is a no-op
    result = await first.reserve(new_job(cost=123), [], now=NOW)
    assert isinstance(result, Reserved)
    await first.close()
    await first.close()

    second = store_factory()
    await second.open()
    assert await second.get_job(result.job.id) == result.job
    assert await schema_migrations(store_factory, second) == [(m.version, m.name) for m in load_migrations()]


async def test_a_start_on_an_up_to_date_database_runs_no_ddl(
    store_factory: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not even CREATE TABLE IF NOT EXISTS: on PostgreSQL that takes the right to create in the schema, which a
    bot whose database an administrator migrated need not have (USAGE and the tables' rights are enough)."""
    first = store_factory()
    await first.open()
    await first.close()
    second = store_factory()
    scripts: list[str] = []
    run_script = type(second)._run_script

    async def recorded(self: Any, conn: Any, script: str) -> None:
        scripts.append(script)
        await run_script(self, conn, script)

    monkeypatch.setattr(type(second), "_run_script", recorded)
    await second.open()
    assert scripts == []
    await second.close()


async def test_two_stores_opening_a_fresh_database_at_once_migrate_it_once(store_factory: StoreFactory) -> None:
    one, two = store_factory(), store_factory()
    await asyncio.gather(one.open(), two.open())
    await one.set_state("k", "v")
    assert await two.get_state("k") == "v"
    assert len(await schema_migrations(store_factory, one)) == len(load_migrations())


async def schema_migrations(factory: StoreFactory, store: Store) -> list[tuple[int, str]]:
    """The rows of schema_migrations, read around the store so the test does not trust its own code."""
    query = "SELECT version, name FROM schema_migrations ORDER BY version"
    [rows] = await run_around_the_store(factory, store, [query])
    return [(int(version), name) for version, name in rows]


async def test_a_store_that_is_not_open_says_so(store_factory: StoreFactory) -> None:
    store = store_factory()
    with pytest.raises(RuntimeError, match="not open"):
        await store.get_state("x")


async def test_async_with_opens_and_closes(store_factory: StoreFactory) -> None:
    async with store_factory() as store:
        await store.set_state("k", "v")
        assert await store.get_state("k") == "v"
    with pytest.raises(RuntimeError, match="not open"):
        await store.get_state("k")


async def test_open_store_creates_the_sqlite_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = open_store("sqlite:///data/nested/imagine.db")
    assert isinstance(store, SqliteStore)
    assert store.path == tmp_path / "data" / "nested" / "imagine.db"
    async with store:
        await store.set_state("k", "v")
    assert (tmp_path / "data" / "nested" / "imagine.db").is_file()
    async with aiosqlite.connect(store.path) as db:
        [(mode,)] = await db.execute_fetchall("PRAGMA journal_mode")
    assert mode == "wal"


def test_split_statements_keeps_semicolons_inside_literals_and_ignores_comments() -> None:
    script = "-- a comment; with a semicolon\nCREATE TABLE t (x TEXT DEFAULT ';');\nINSERT INTO t VALUES ('a;\nb');\n"
    assert split_statements(script) == [
        "-- a comment; with a semicolon\nCREATE TABLE t (x TEXT DEFAULT ';');",
        "INSERT INTO t VALUES ('a;\nb');",
    ]
    assert split_statements("-- only a comment\n") == []
    with pytest.raises(ValueError, match="unterminated"):
        split_statements("CREATE TABLE t (x TEXT)\n")


def test_numbered_parameters_become_plain_question_marks_in_order() -> None:
    # Python's sqlite3 refuses a sequence for "?1" from 3.14 (a named parameter to it), so "$N" becomes "?" and a
    # parameter used twice is passed twice.
    query, values = _prepared("SELECT $2 + $1 WHERE a = $2 AND b = '$'", ("one", "two"))
    assert query == "SELECT ? + ? WHERE a = ? AND b = '$'"
    assert values == ["two", "one", "two"]


async def test_postgres_gives_up_on_a_query_that_hangs_but_not_on_a_long_migration(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A silent server must not hang reservations for the kernel's ~15 minutes; a big backfill may take its time."""
    url = postgres_url()
    monkeypatch.setattr(postgres_module, "COMMAND_TIMEOUT", 0.3)
    schema = f"test_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(url)
    await admin.execute(f'CREATE SCHEMA "{schema}"')
    store = PostgresStore(url, schema=schema, min_size=1, max_size=2)
    try:
        await store.open()
        async with store._connection() as conn:
            with pytest.raises(TimeoutError):
                await conn.execute("SELECT pg_sleep(2)")
        async with store._transaction() as conn:
            await store._run_script(conn, "SELECT pg_sleep(0.6)")  # a migration step, over the query limit
    finally:
        await store.close()
        await admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await admin.close()


async def test_reservations_go_on_when_another_version_adds_a_column_to_jobs(
    store_factory: StoreFactory, new_job: Callable[..., NewJob]
) -> None:
    """A newer bot's migration on the same database: this one's reservations (on connections it already used,
    PostgreSQL's through its reservation function) still charge and return the job, and only once."""
    store = store_factory(pool_size=1)
    await store.open()
    assert isinstance(await store.reserve(new_job(cost=100), [], now=NOW), Reserved)
    await run_around_the_store(store_factory, store, ["ALTER TABLE jobs ADD COLUMN from_a_newer_bot TEXT"])
    second = await store.reserve(new_job(cost=50), [], now=NOW)
    assert isinstance(second, Reserved) and second.job.cost == 50
    assert await store.get_job(second.job.id) == second.job
    assert await store.usage(guild_id=second.job.guild_id, user_id=second.job.user_id, period="day", now=NOW) == 150
    await store.close()


async def test_a_postgres_start_leaves_an_unchanged_reservation_function_alone() -> None:
    """Replacing a function takes owning it: a start whose function is already right does not replace it."""
    url = postgres_url()
    schema = f"test_{uuid.uuid4().hex}"
    admin = await asyncpg.connect(url)
    try:
        await admin.execute(f"CREATE SCHEMA {schema}")
        first = PostgresStore(url, schema=schema, min_size=1, max_size=2)
        await first.open()
        await first.close()
        oid = await admin.fetchval(
            "SELECT p.oid::bigint FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE p.proname = $1 AND n.nspname = $2",
            postgres_module.RESERVE_FUNCTION,
            schema,
        )
        xmin = await admin.fetchval("SELECT xmin::text FROM pg_proc WHERE oid = $1", oid)
        second = PostgresStore(url, schema=schema, min_size=1, max_size=2)
        await second.open()
        await second.close()
        assert await admin.fetchval("SELECT xmin::text FROM pg_proc WHERE oid = $1", oid) == xmin  # not rewritten
    finally:
        await admin.execute(f"DROP SCHEMA {schema} CASCADE")
        await admin.close()
