"""PostgreSQL only: the pool's connections, lost at an unlucky moment."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import asyncpg
import pytest

from imaginebot.store import NewJob, PostgresStore, Reserved
from tests.postgres import fresh_schema, postgres_url
from tests.store.conftest import NOW
from tests.store.test_reserve import member

NewJobFactory = Callable[..., NewJob]


@pytest.fixture
async def store() -> AsyncIterator[PostgresStore]:
    """An opened PostgreSQL store on a fresh schema."""
    url = postgres_url()
    async with fresh_schema(url) as schema:
        store = PostgresStore(url, schema=schema, min_size=1, max_size=2)
        await store.open()
        try:
            yield store
        finally:
            await store.close()


async def test_a_connection_lost_as_it_is_given_back_leaves_the_work_done_on_it_done(
    store: PostgresStore, new_job: NewJobFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server drops the connection after the reservation committed, before the pool took it back (a restart,
    a terminated backend): asyncpg's reset of it fails. The reservation stands, and the caller is told so."""
    pool = store._connected()
    dropped: list[int] = []
    admin = await asyncpg.connect(postgres_url())

    async def reset_after_the_server_dropped_it(connection: asyncpg.Connection) -> None:
        # The pool's own reset hook (create_pool's ``reset``), run as it takes a connection back: the server drops
        # the connection first, so the hook's query fails as asyncpg's own reset query would.
        if not dropped:
            dropped.append(connection.get_server_pid())
            # With a timeout (PostgreSQL 14+) it returns once the backend is gone.
            assert await admin.fetchval("SELECT pg_terminate_backend($1, 10000)", dropped[0])
        await connection.execute("SELECT 1")

    try:
        pool._reset = reset_after_the_server_dropped_it  # type: ignore[attr-defined]
        result = await store.reserve(new_job(cost=100), [member(500)], now=NOW)
        assert dropped, "the connection was not dropped"
        assert isinstance(result, Reserved), result
        assert await store.get_job(result.job.id) == result.job  # on a new connection: the pool goes on
    finally:
        await admin.close()
