"""Where the database is: DATABASE_URL parsed into a SQLite file or a PostgreSQL DSN."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

log = logging.getLogger(__name__)

_FORMS = "sqlite:///relative/path, sqlite:////absolute/path or postgresql://user:pass@host:port/db"


@dataclass(frozen=True, slots=True)
class SqliteLocation:
    """A SQLite database file (an absolute path)."""

    path: Path


@dataclass(frozen=True, slots=True)
class PostgresLocation:
    """A PostgreSQL database. ``dsn`` may hold a password: show ``redacted`` instead."""

    dsn: str = field(repr=False)

    @property
    def redacted(self) -> str:
        """The DSN with its password replaced by ``***``."""
        parts = urlsplit(self.dsn)
        if parts.password is None:
            return self.dsn
        userinfo, _, hostinfo = parts.netloc.rpartition("@")
        user = userinfo.partition(":")[0]
        return urlunsplit(parts._replace(netloc=f"{user}:***@{hostinfo}"))

    def __repr__(self) -> str:
        return f"PostgresLocation({self.redacted!r})"


def parse_database_url(url: str, *, cwd: Path | None = None) -> SqliteLocation | PostgresLocation:
    """Read DATABASE_URL. ``sqlite:///rel/path`` is relative to ``cwd`` (default: the current directory),
    ``sqlite:////abs/path`` absolute; ``postgresql://`` and ``postgres://`` go to asyncpg as they are.
    Anything else raises ValueError naming DATABASE_URL (without echoing a password)."""
    scheme, separator, rest = url.strip().partition("://")
    scheme = scheme.lower()
    if not separator:
        raise ValueError(f"DATABASE_URL must look like {_FORMS}")
    if scheme == "sqlite":
        return SqliteLocation(_sqlite_path(rest, cwd or Path.cwd()))
    if scheme in ("postgresql", "postgres"):
        dsn = f"postgresql://{rest}"
        try:
            _ = urlsplit(dsn).port  # raises ValueError for a port that is not a number in range
        except ValueError:
            raise ValueError("DATABASE_URL is a postgresql:// URL with an invalid host or port") from None
        if urlsplit(dsn).netloc.count("@") > 1:
            # asyncpg splits at the first "@", urlsplit at the last: they would disagree on host and password.
            raise ValueError("DATABASE_URL has more than one '@': write an '@' in the user name or password as %40")
        return PostgresLocation(dsn)
    raise ValueError(f"DATABASE_URL must look like {_FORMS}, not a {scheme or 'scheme-less'}:// URL")


def _sqlite_path(rest: str, cwd: Path) -> Path:
    # "sqlite:///x" leaves "/x" (relative x); "sqlite:////x" leaves "//x" (absolute /x); a host is not allowed.
    if not rest.startswith("/"):
        raise ValueError(f"DATABASE_URL must look like {_FORMS} (a sqlite URL has three or four slashes)")
    raw = rest[1:]
    if not raw or raw.endswith("/"):
        raise ValueError("DATABASE_URL must name a SQLite file, e.g. sqlite:///data/imagine.db")
    if "?" in raw or "#" in raw:
        raise ValueError("DATABASE_URL: a sqlite URL takes no query string or fragment")
    path = Path(raw)
    return path if path.is_absolute() else cwd / path
