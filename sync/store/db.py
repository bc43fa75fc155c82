"""Engine and transaction helpers shared by every store module."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from functools import lru_cache

from sqlalchemy import URL, DateTime, Engine, create_engine, event
from sqlalchemy.orm import Session as OrmSession
from sqlalchemy.orm import sessionmaker
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """Stores UTC and hands back aware datetimes on every database.

    SQLite drops tzinfo on ``DateTime(timezone=True)``; this puts it back, and
    refuses naive values on the way in so no local time sneaks into the store.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; attach a timezone first")
        return value.astimezone(timezone.utc)

    def process_result_value(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


#: What a valid CALSYNC_DATABASE_URL looks like, for the error that refuses a malformed one.
URL_EXAMPLES = "e.g. sqlite:///calsync.db or postgresql+psycopg://user:password@host:5432/calsync"


def make_engine(url: str) -> Engine:
    """An engine for ``url`` (CALSYNC_DATABASE_URL), connecting lazily.

    Raises:
      ConfigError: naming CALSYNC_DATABASE_URL when the URL cannot be parsed
        (``notaurl``, a port that is not a number), names a database
        SQLAlchemy does not know, or needs a driver that is not installed.
        That is a setting to fix — one line, exit 2 — not a database that is
        down, and nothing that ``calsync db upgrade`` could repair. The
        message never repeats the URL, which may hold a password.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    from sync.errors import ConfigError

    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigError(f"CALSYNC_DATABASE_URL is not a database URL ({_reason(exc)}); {URL_EXAMPLES}") from None
    except ValueError:
        # SQLAlchemy's int(port) failed. Its text is not repeated: for ``user:pa@ss:word@host`` it
        # quotes "word@host", a piece of a password whose "@" was not %-encoded.
        raise ConfigError("CALSYNC_DATABASE_URL is not a database URL (its port is not a number; %-encode any "
                          f"':', '@' or '/' in the user name and password); {URL_EXAMPLES}") from None
    try:
        return _engine(parsed)
    except (ArgumentError, ImportError) as exc:  # NoSuchModuleError (an unknown dialect) is an ArgumentError
        raise ConfigError(f"CALSYNC_DATABASE_URL names a database calsync cannot open ({_reason(exc)}); "
                          f"{URL_EXAMPLES}") from None


def _reason(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _engine(url: URL) -> Engine:
    if url.get_backend_name() == "sqlite":
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
            # WAL lets the in-process worker threads read while one writes;
            # foreign keys are off by default in SQLite.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)


@lru_cache(maxsize=8)
def engine_for(url: str) -> Engine:
    return make_engine(url)


class Store:
    """A database handle: one engine, sessions opened per unit of work."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = engine_for(url)
        self._factory = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def tx(self) -> Iterator[OrmSession]:
        """One transaction: committed on success, rolled back on any error."""
        with self._factory() as db, db.begin():
            yield db
