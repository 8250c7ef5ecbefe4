"""How quotas, the credit ledger, jobs and server settings are stored: one interface, SQLite and PostgreSQL.

``open_store(os.environ["DATABASE_URL"])`` gives an unopened store: ``await store.open()`` (or ``async with``)
connects and applies migrations; ``await store.close()`` at shutdown.
"""

from __future__ import annotations

import logging

from imaginebot.store.base import (
    FINAL_STATES,
    PENDING_STATES,
    SCOPES,
    SETTINGS_FIELDS,
    AuditEntry,
    BudgetCheck,
    FailedState,
    GuildSettings,
    Job,
    JobState,
    LedgerEntry,
    LedgerReason,
    NewJob,
    Refused,
    Reserved,
    Scope,
    Store,
)
from imaginebot.store.postgres import PostgresStore
from imaginebot.store.sqlite import SqliteStore
from imaginebot.store.url import PostgresLocation, SqliteLocation, parse_database_url

log = logging.getLogger(__name__)

__all__ = [
    "FINAL_STATES",
    "PENDING_STATES",
    "SCOPES",
    "SETTINGS_FIELDS",
    "AuditEntry",
    "BudgetCheck",
    "FailedState",
    "GuildSettings",
    "Job",
    "JobState",
    "LedgerEntry",
    "LedgerReason",
    "NewJob",
    "PostgresLocation",
    "PostgresStore",
    "Refused",
    "Reserved",
    "Scope",
    "SqliteLocation",
    "SqliteStore",
    "Store",
    "open_store",
    "parse_database_url",
]


def open_store(database_url: str) -> Store:
    """The store DATABASE_URL points at, not yet opened. Raises ValueError (naming DATABASE_URL) for a bad URL."""
    location = parse_database_url(database_url)
    if isinstance(location, SqliteLocation):
        return SqliteStore(location.path)
    return PostgresStore(location.dsn)
