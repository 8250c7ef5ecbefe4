"""/quota report's attachment: the period's ledger as CSV, compressed when it would not fit the upload limit."""

from __future__ import annotations

import csv
import gzip
import io
from datetime import UTC, datetime

from cogs.quota import ledger_file
from imaginebot.store import LedgerEntry

WHEN = datetime(2026, 11, 25, 12, tzinfo=UTC)


def entries(count: int) -> list[LedgerEntry]:
    return [
        LedgerEntry(
            id=n,
            guild_id=1,
            user_id=1000 + n % 50,
            job_id=n,
            amount=125,
            reason="reserve",
            charged_at=WHEN,
            created_at=WHEN,
            actor_id=None,
        )
        for n in range(count)
    ]


def test_a_ledger_that_fits_is_plain_csv_with_its_header() -> None:
    data, name = ledger_file(entries(3), "quota-day.csv", 10 * 1024 * 1024)
    assert data is not None and name == "quota-day.csv"
    rows = list(csv.DictReader(io.StringIO(data.decode())))
    assert len(rows) == 3 and rows[0]["credits"] == "1.25" and rows[0]["member_id"] == "1000"


def test_a_ledger_over_the_upload_limit_is_gzipped() -> None:
    data, name = ledger_file(entries(20_000), "quota-month.csv", 200_000)
    assert data is not None and name == "quota-month.csv.gz" and len(data) <= 200_000
    assert len(list(csv.DictReader(io.StringIO(gzip.decompress(data).decode())))) == 20_000


def test_a_ledger_too_large_even_compressed_is_not_attached() -> None:
    data, name = ledger_file(entries(20_000), "quota-month.csv", 1_000)
    assert data is None and name.endswith(".gz")
