"""PostgreSQL only: the pool's connections, lost at an unlucky moment."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

import imaginebot.store.postgres as postgres_module
from imaginebot.store import NewJob, PostgresStore, Reserved
from imaginebot.store.sql import Statement
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


class SilentNetwork:
    """A TCP relay between the store and the server that can go silent, as a network partition does: connections
    stay open, and nothing gets through either way (new ones are accepted and never answered)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._speaking = asyncio.Event()
        self._speaking.set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def silent(self) -> bool:
        """Whether nothing gets through."""
        return not self._speaking.is_set()

    @silent.setter
    def silent(self, silent: bool) -> None:
        if silent:
            self._speaking.clear()
        else:
            self._speaking.set()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[str]:
        """Relay while in the block; yields ``url`` pointed at the relay."""
        server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        parts = urlsplit(self.url)
        credentials = parts.netloc.rpartition("@")[0]
        relay = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
        try:
            yield urlunsplit(parts._replace(netloc=f"{credentials}@{relay}" if credentials else relay))
        finally:
            server.close()
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._speaking.wait()  # a new connection is accepted, and not answered while silent
            parts = urlsplit(self.url)
            server_reader, server_writer = await asyncio.open_connection(parts.hostname, parts.port or 5432)
            await asyncio.gather(self._pump(reader, server_writer), self._pump(server_reader, writer))
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                if not self.silent:
                    sink.write(data)
                    await sink.drain()
        except ConnectionError:
            pass
        finally:
            sink.close()


async def test_a_server_gone_silent_costs_one_query_limit_and_the_store_goes_on_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A partition or a frozen host: a query fails after COMMAND_TIMEOUT, not twice that (asyncpg would wait as long
    again for the query's cancellation and the connection's reset before giving it back), in a transaction too."""
    limit = 1.0
    monkeypatch.setattr(postgres_module, "COMMAND_TIMEOUT", limit)
    url = postgres_url()
    network = SilentNetwork(url)
    async with fresh_schema(url) as schema, network.running() as relayed:
        store = PostgresStore(relayed, schema=schema, min_size=2, max_size=2)
        await store.open()
        try:
            await asyncio.gather(store.get_guild_settings(1), store.get_guild_settings(2))  # both connections open
            network.silent = True
            for attempt in (
                store.get_guild_settings(1),
                store._atomically([Statement("SELECT 1", ()), Statement("SELECT 2", ())]),
            ):
                started = time.monotonic()
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(attempt, 10 * limit)
                assert time.monotonic() - started < 1.6 * limit
            network.silent = False
            settings = await asyncio.wait_for(store.get_guild_settings(1), 10 * limit)  # on new connections
            assert settings.guild_id == 1
        finally:
            await asyncio.wait_for(store.close(), 10 * limit)
