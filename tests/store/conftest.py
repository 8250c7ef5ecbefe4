"""A fresh store per test on every backend: SQLite always, PostgreSQL when TEST_DATABASE_URL is set."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiosqlite
import asyncpg
import pytest

from imaginebot.store import NewJob, PostgresStore, SqliteStore, Store
from tests.postgres import fresh_schema, postgres_url

# A Wednesday, well inside its day, week and month.
NOW = datetime(2026, 3, 11, 12, 0, tzinfo=UTC)

GUILD = 1_000_000_000_000_001
OTHER_GUILD = 1_000_000_000_000_002
USER = 2_000_000_000_000_001
OTHER_USER = 2_000_000_000_000_002
MOD = 3_000_000_000_000_001


class StoreFactory:
    """Makes stores on one fresh database (a SQLite file, or a PostgreSQL schema) and closes them at the end."""

    def __init__(self, backend: str, make: Callable[[int], Store]) -> None:
        self.backend = backend
        self._make = make
        self.made: list[Store] = []

    def __call__(self, *, pool_size: int = 4) -> Store:
        """A new, unopened store on this test's database. ``pool_size`` only matters for PostgreSQL."""
        store = self._make(pool_size)
        self.made.append(store)
        return store

    async def close_all(self) -> None:
        for store in self.made:
            await store.close()


@pytest.fixture(params=["sqlite", "postgres"])
async def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreFactory]:
    if request.param == "sqlite":
        path = tmp_path / "store.db"
        factory = StoreFactory("sqlite", lambda _pool_size: SqliteStore(path))
        yield factory
        await factory.close_all()
        return

    url = postgres_url()
    async with fresh_schema(url) as schema:
        factory = StoreFactory(
            "postgres", lambda pool_size: PostgresStore(url, schema=schema, min_size=1, max_size=pool_size)
        )
        yield factory
        await factory.close_all()


@pytest.fixture
async def store(store_factory: StoreFactory) -> Store:
    """An opened store on a fresh database."""
    store = store_factory()
    await store.open()
    return store


@pytest.fixture
def new_job() -> Callable[..., NewJob]:
    """Builds a generation request; keyword arguments override the defaults."""
    counter = iter(range(10_000_000_000_000_000, 20_000_000_000_000_000))

    def build(**overrides: Any) -> NewJob:
        interaction_id = next(counter)
        values: dict[str, Any] = {
            "guild_id": GUILD,
            "channel_id": 4_000_000_000_000_001,
            "user_id": USER,
            "application_id": 5_000_000_000_000_001,
            "interaction_id": interaction_id,
            "interaction_token": f"token-{interaction_id}",
            "token_expires_at": NOW + timedelta(minutes=15),
            "options": {"prompt": "a red fox", "size": "1024x1024", "quality": "medium", "count": 1},
            "cost": 100,
        }
        values.update(overrides)
        return NewJob(**values)

    return build


async def run_around_the_store(
    factory: StoreFactory, store: Store, statements: list[str]
) -> list[list[tuple[Any, ...]]]:
    """Run SQL on the store's database without the store's code (committed); each statement's rows."""
    results: list[list[tuple[Any, ...]]] = []
    if factory.backend == "sqlite":
        assert isinstance(store, SqliteStore)
        async with aiosqlite.connect(store.path) as db:
            for statement in statements:
                results.append([tuple(row) for row in await db.execute_fetchall(statement)])
            await db.commit()
        return results
    assert isinstance(store, PostgresStore) and store.schema is not None
    conn = await asyncpg.connect(postgres_url(), server_settings={"search_path": store.schema})
    try:
        for statement in statements:
            results.append([tuple(row) for row in await conn.fetch(statement)])
    finally:
        await conn.close()
    return results
