"""Database plumbing: metadata naming, UTC timestamps, engines, sessions and the commit boundary."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar

import sqlalchemy
from sqlalchemy import JSON, DateTime, MetaData, TypeDecorator, Uuid, event
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Session
from sqlalchemy.util import greenlet_spawn

from flowstudio.db import d1

# `sqlite+d1://` URLs: SQLite's dialect over the D1 REST driver.
sqlalchemy.dialects.registry.register(
    d1.SQLALCHEMY_DRIVERNAME.replace("+", "."), __name__ + ".d1", "D1Dialect"
)

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


fromisoformat = datetime.fromisoformat


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on both backends.

    PostgreSQL stores timestamptz; SQLite stores naive UTC text, which sorts and compares
    correctly as long as every value is converted to UTC first — which this type enforces.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    def result_processor(self, dialect: Dialect, coltype: Any) -> Any:
        if dialect.name != "sqlite":
            return super().result_processor(dialect, coltype)

        # SQLite hands back the text we stored; one C call parses it (a history page reads
        # hundreds of these, and the generic path costs a regex and two Python calls each).
        def parse(value: str | None) -> datetime | None:
            return None if value is None else fromisoformat(value).replace(tzinfo=UTC)

        return parse


JSONType = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), uuid.UUID: Uuid(), dict[str, Any]: JSONType}


def strict_json(value: Any) -> str:
    """JSON columns are written as strict JSON: NaN and infinities are refused (ValueError)
    rather than written as tokens that PostgreSQL rejects and no JSON parser should accept."""
    return json.dumps(value, allow_nan=False)


def create_engine(url: str, *, echo: bool = False) -> AsyncEngine:
    if url.startswith(d1.SQLALCHEMY_DRIVERNAME):
        # D1 answers over HTTP: a connection is an HTTP client, a unit of work one batch.
        engine = create_async_engine(
            url, echo=echo, pool_size=10, max_overflow=10, json_serializer=strict_json
        )
    elif url.startswith("sqlite"):
        engine = create_async_engine(
            url, echo=echo, connect_args={"timeout": 30}, json_serializer=strict_json
        )

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()
            # We emit BEGIN ourselves (below) instead of the driver's implicit deferred BEGIN.
            dbapi_connection.isolation_level = None

        @event.listens_for(engine.sync_engine, "begin")
        def _begin(connection: Any) -> None:
            # A deferred transaction that reads and then writes fails at once with SQLITE_BUSY
            # when another writer committed in between; taking the write lock up front makes
            # concurrent requests and the worker queue on busy_timeout instead. Read-only
            # transactions take no lock at all, so reads run beside writers (WAL).
            if connection.get_execution_options().get(READ_ONLY):
                connection.exec_driver_sql("BEGIN")
            else:
                connection.exec_driver_sql("BEGIN IMMEDIATE")

    else:
        engine = create_async_engine(
            url, echo=echo, pool_size=10, max_overflow=10, json_serializer=strict_json
        )
        _ping_when_idle(engine)
    _refuse_writes_when_read_only(engine)
    return engine


def _create_postgres_read_engine(engine: AsyncEngine) -> AsyncEngine:
    """PostgreSQL connections for read-only work: a pool of their own, in autocommit.

    No BEGIN and COMMIT round trips. Nothing is lost by it: under READ COMMITTED, PostgreSQL's
    default, every statement takes its own snapshot inside a transaction too, and writes are
    refused here before they reach the server. Setting autocommit per checkout on the shared
    pool instead came too late for the connection check, which then wrapped its `;` in a
    BEGIN and a ROLLBACK: three round trips before the query."""
    reader = create_async_engine(
        engine.url,
        echo=engine.echo,
        isolation_level="AUTOCOMMIT",
        pool_size=5,
        max_overflow=15,
        execution_options={READ_ONLY: True},
    )
    _ping_when_idle(reader)
    _refuse_writes_when_read_only(reader)
    return reader


# A pooled PostgreSQL connection idle longer than this is checked (a `;` round trip) before
# use, and replaced if the server dropped it. One used more recently is trusted: checking
# every checkout (pool_pre_ping) cost a round trip on every request, for a failure that,
# when it does happen, invalidates the whole pool at once; the request that meets it answers
# 503 with Retry-After.
PING_AFTER_IDLE_SECONDS = 1.0


def _ping_when_idle(engine: AsyncEngine) -> None:
    dialect = engine.dialect

    @event.listens_for(engine.sync_engine, "checkin")
    def _checked_in(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _check_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since <= PING_AFTER_IDLE_SECONDS:
            return
        try:
            dialect.do_ping(dbapi_connection)
        except (dialect.loaded_dbapi.Error, OSError) as error:
            # The pool discards this connection and checks out another (or a new one).
            raise DisconnectionError(f"a pooled connection was closed: {error}") from error


def _refuse_writes_when_read_only(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def _refuse(connection: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if connection.get_execution_options().get(READ_ONLY) and not statement.lstrip()[
            :6
        ].upper().startswith(_READ_STATEMENTS):
            raise ReadOnlyViolation(f"a write in a read-only transaction: {statement[:80]!r}")


# Execution option of read-only sessions (GET requests): SQLite begins them without the write
# lock, and any statement that would write raises instead of racing for that lock later.
READ_ONLY = "flowstudio_read_only"
_READ_STATEMENTS = (
    "SELECT",
    "WITH",
    "PRAGMA",
    "EXPLAI",
    "SHOW",
    "BEGIN",
    "COMMIT",
    "ROLLBA",
    "SAVEPO",
    "RELEAS",
)


class ReadOnlyViolation(RuntimeError):
    """Code that writes ran in a read-only (GET) transaction: a programming error."""


T = TypeVar("T")


class Reads:
    """Runs a read-only unit of work — a sync function of a Core `Connection` — in one go.

    The busiest reads (history pages) are a few Core statements whose SQL takes a fraction of a
    millisecond. Through aiosqlite every step of a statement (cursor, execute, fetch, close,
    begin, rollback) is its own hand-off to the driver's thread and back, which cost several
    times the SQL; here SQLite reads run whole on a small pool of reader threads with plain
    `sqlite3` connections (`query_only`, so they cannot write), one hand-off a unit. PostgreSQL
    needs no thread: the same function runs in one greenlet on the read pool, in autocommit
    like every read-only session.

    A unit runs in one transaction on SQLite, so its statements see one snapshot (WAL).

    `engine` is the async engine for read-only sessions (GET requests): on SQLite the given
    engine and pool, whose transactions then begin without the write lock; on PostgreSQL a
    pool of its own in autocommit. Either way statements that would write raise
    `ReadOnlyViolation` instead of reaching the database."""

    THREADS = 4

    def __init__(self, engine: AsyncEngine) -> None:
        self._sync_engine: sqlalchemy.Engine | None = None
        self._threads: ThreadPoolExecutor | None = None
        if engine.dialect.driver == d1.D1Dialect.driver:
            # Each read is one HTTP request already: it runs in a greenlet, as on PostgreSQL.
            self.engine = engine.execution_options(**{READ_ONLY: True})
        elif engine.dialect.name == "sqlite":
            self.engine = engine.execution_options(**{READ_ONLY: True})
            self._sync_engine = _sqlite_reader_engine(engine, pool_size=self.THREADS)
            self._threads = ThreadPoolExecutor(self.THREADS, thread_name_prefix="sqlite-read")
        else:
            self.engine = _create_postgres_read_engine(engine)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    async def run(self, work: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        if self._threads is None:
            # Checkout, the work and checkin in one greenlet: `async with engine.connect()`
            # and `run_sync` took three, which cost more than the statement's round trip.
            return await greenlet_spawn(
                self._run_whole, self.engine.sync_engine, work, args, kwargs
            )
        return await asyncio.get_running_loop().run_in_executor(
            self._threads, self._run_whole, self._sync_engine, work, args, kwargs
        )

    @staticmethod
    def _run_whole(engine: sqlalchemy.Engine, work: Callable[..., T], args: Any, kwargs: Any) -> T:
        with engine.connect() as connection:
            return work(connection, *args, **kwargs)

    async def close(self) -> None:
        if self._threads is not None:
            # Waits for running units; they are short reads.
            await asyncio.to_thread(self._threads.shutdown, wait=True)
        if self._sync_engine is not None:
            self._sync_engine.dispose()
        else:
            await self.engine.dispose()  # on SQLite the given engine's, which is not ours


def _sqlite_reader_engine(engine: AsyncEngine, *, pool_size: int) -> sqlalchemy.Engine:
    """A synchronous engine on the same SQLite file, for `Reads`' threads."""
    reader = sqlalchemy.create_engine(
        engine.url.set(drivername="sqlite"),
        # A connection is used by one reader thread at a time, but not always the same one.
        connect_args={"timeout": 30, "check_same_thread": False},
        pool_size=pool_size,
        max_overflow=0,
        execution_options={READ_ONLY: True},
    )

    @event.listens_for(reader, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # BEGIN is ours (below)
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA query_only=ON")
        cursor.close()

    @event.listens_for(reader, "begin")
    def _begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN")  # deferred: a read snapshot, no lock

    return reader


def session_factory(
    engine: AsyncEngine, *, sync_session_class: type[Session] = Session
) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(
        engine, expire_on_commit=False, autoflush=False, sync_session_class=sync_session_class
    )


async def session_scope(factory: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """The commit boundary: one transaction per request, job or command."""
    async with factory() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise
