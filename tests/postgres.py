"""The PostgreSQL the tests may use: TEST_DATABASE_URL, and a fresh schema per test on it."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

HOW_TO_ENABLE_POSTGRES = "set TEST_DATABASE_URL=postgresql://... (see .ci/start-postgres.sh)"


def postgres_url() -> str:
    """TEST_DATABASE_URL, or skip the test (fail it under CI, which must run the PostgreSQL variants)."""
    url = os.environ.get("TEST_DATABASE_URL", "").strip()
    if url:
        return url
    if os.environ.get("CI", "").strip().lower() == "true":
        pytest.fail(f"CI must run the PostgreSQL tests: {HOW_TO_ENABLE_POSTGRES}", pytrace=False)
    pytest.skip(f"PostgreSQL tests skipped: {HOW_TO_ENABLE_POSTGRES}")


@contextlib.asynccontextmanager
async def fresh_schema(url: str) -> AsyncIterator[str]:
    """An empty schema on ``url``'s database for one test, dropped with everything in it afterwards."""
    schema = f"test_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(url)
    try:
        await admin.execute(f'CREATE SCHEMA "{schema}"')
        try:
            yield schema
        finally:
            await admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
    finally:
        await admin.close()
