"""/quota report's attachments: the period's ledger as CSV, split into parts when it would not fit the upload limit."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

from cogs.quota import LEDGER_HEADER, MAX_LEDGER_FILES, ledger_files
from imaginebot.delivery.batching import REQUEST_SIZE_LIMIT, file_limit, pack_for_requests
from imaginebot.store import LedgerEntry

WHEN = datetime(2026, 11, 25, 12, tzinfo=UTC)


def entries(count: int) -> list[LedgerEntry]:
    return [
        LedgerEntry(
            id=n,
            guild_id=1,
            user_id=1000 + n % 50,
            job_id=n + 1,
            amount=125,
            reason="reserve",
            charged_at=WHEN,
            created_at=WHEN,
            actor_id=None,
        )
        for n in range(count)
    ]


def read(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode())))


def test_a_ledger_that_fits_is_one_csv_with_its_header() -> None:
    [(data, name)] = ledger_files(entries(3), "quota-day-2026-11-25", 10 * 1024 * 1024)
    assert name == "quota-day-2026-11-25.csv"
    rows = read(data)
    assert len(rows) == 3 and rows[0]["credits"] == "1.25" and rows[0]["member_id"] == "1000"


def test_an_empty_ledger_is_its_header_alone() -> None:
    [(data, _)] = ledger_files([], "quota-day", 1_000)
    assert data.decode().strip() == ",".join(LEDGER_HEADER)


def test_a_ledger_over_the_upload_limit_is_split_into_csv_parts_each_with_the_header() -> None:
    parts = ledger_files(entries(20_000), "quota-month", 200_000)
    assert len(parts) > 1
    assert [name for _, name in parts] == [
        f"quota-month-part-{n}-of-{len(parts)}.csv" for n in range(1, len(parts) + 1)
    ]
    assert all(len(data) <= 200_000 for data, _ in parts)
    rows = [row for data, _ in parts for row in read(data)]
    assert [int(row["job_id"]) for row in rows] == list(range(1, 20_001))  # every entry once, in order


def test_a_ledger_that_would_take_too_many_files_is_not_attached() -> None:
    assert ledger_files(entries(20_000), "quota-month", 10_000) == []  # > MAX_LEDGER_FILES parts
    assert 0 < len(ledger_files(entries(20_000), "quota-month", 40_000)) <= MAX_LEDGER_FILES
    assert ledger_files(entries(3), "quota-month", 60) == []  # not even one row fits


def test_a_part_fits_a_request_alone_even_where_the_upload_limit_is_higher() -> None:
    boosted = 100 * 1024 * 1024
    assert file_limit(boosted) < REQUEST_SIZE_LIMIT
    assert file_limit(10 * 1024 * 1024) == 10 * 1024 * 1024
    parts = ledger_files(entries(20_000), "quota-month", file_limit(boosted))
    assert [len(batch) for batch in pack_for_requests(parts, lambda part: len(part[0]))] == [1]


def test_parts_are_sent_ten_to_a_message_and_within_a_request_size() -> None:
    small = [(b"x" * 100, f"{n}.csv") for n in range(23)]
    assert [len(batch) for batch in pack_for_requests(small, lambda part: len(part[0]))] == [10, 10, 3]
    large = [(b"x" * 9 * 1024 * 1024, f"{n}.csv") for n in range(5)]  # 25 MiB a request: two of these at most
    assert [len(batch) for batch in pack_for_requests(large, lambda part: len(part[0]))] == [2, 2, 1]
