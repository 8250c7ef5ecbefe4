"""DATABASE_URL parsing."""

from __future__ import annotations

from pathlib import Path

import pytest

from imaginebot.store import PostgresLocation, PostgresStore, SqliteLocation, open_store, parse_database_url


def test_relative_sqlite_path_is_relative_to_the_working_directory(tmp_path: Path) -> None:
    assert parse_database_url("sqlite:///data/imagine.db", cwd=tmp_path) == SqliteLocation(
        tmp_path / "data" / "imagine.db"
    )


def test_relative_path_defaults_to_the_current_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    location = parse_database_url("sqlite:///x.db")
    assert isinstance(location, SqliteLocation)
    assert location.path == tmp_path / "x.db"
    assert location.path.is_absolute()


def test_absolute_sqlite_path(tmp_path: Path) -> None:
    assert parse_database_url("sqlite:////var/lib/imagine/bot.db", cwd=tmp_path) == SqliteLocation(
        Path("/var/lib/imagine/bot.db")
    )
    assert parse_database_url("SQLite:////tmp/x.db") == SqliteLocation(Path("/tmp/x.db"))


@pytest.mark.parametrize(
    "url",
    ["postgresql://bot:pw@db.example:5432/imagine", "postgres://bot:pw@db.example:5432/imagine"],
)
def test_postgres_urls(url: str) -> None:
    location = parse_database_url(url)
    assert location == PostgresLocation("postgresql://bot:pw@db.example:5432/imagine")
    assert isinstance(open_store(url), PostgresStore)


def test_postgres_password_never_shows_in_repr() -> None:
    location = parse_database_url("postgresql://bot:s3cret@db:5432/imagine")
    assert isinstance(location, PostgresLocation)
    assert "s3cret" not in repr(location)
    assert location.redacted == "postgresql://bot:***@db:5432/imagine"
    assert "s3cret" not in repr(open_store("postgresql://bot:s3cret@db:5432/imagine"))
    assert PostgresLocation("postgresql://bot@db/imagine").redacted == "postgresql://bot@db/imagine"


@pytest.mark.parametrize(
    "url",
    [
        "",
        "data/imagine.db",
        "mysql://bot:s3cret@db/imagine",
        "postgresql+asyncpg://bot:s3cret@db/imagine",
        "postgresql://bot:s3cret@db:notaport/imagine",
        "postgresql://bot:s3cret@db:99999/imagine",
        "sqlite://",
        "sqlite:///",
        "sqlite://host/imagine.db",
        "sqlite:///data/",
        "sqlite:///imagine.db?mode=ro",
    ],
)
def test_anything_else_is_refused_naming_the_variable_and_hiding_the_password(url: str) -> None:
    with pytest.raises(ValueError, match="DATABASE_URL") as caught:
        parse_database_url(url)
    assert "s3cret" not in str(caught.value)
    with pytest.raises(ValueError, match="DATABASE_URL"):
        open_store(url)
