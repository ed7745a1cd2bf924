"""PostgreSQL pooled connections: checked only after sitting idle, replaced when dropped."""

from __future__ import annotations

import collections

import asyncpg
import pytest
from sqlalchemy import text

from flowstudio import db as db_module
from flowstudio.db import Reads, session_factory


@pytest.fixture
def postgres_only(backend):
    if backend != "postgres":
        pytest.skip("SQLite has no server to drop a connection")


@pytest.fixture
def round_trips(monkeypatch):
    """What each asyncpg connection sends: simple queries and prepared statement runs."""
    sent: collections.Counter[str] = collections.Counter()

    def counting(name, original):  # noqa: ANN001, ANN202
        async def wrapper(self, query="", *args, **kwargs):  # noqa: ANN001, ANN202
            sent[f"{name} {query}".strip() if isinstance(query, str) else name] += 1
            return await original(self, query, *args, **kwargs)

        return wrapper

    for name in ("execute", "fetchrow", "fetch", "prepare"):
        monkeypatch.setattr(
            asyncpg.Connection, name, counting(name, getattr(asyncpg.Connection, name))
        )
    return sent


def backend_pid(connection) -> int:  # noqa: ANN001
    return connection.scalar(text("SELECT pg_backend_pid()"))


async def second_read_unit(reads: Reads, round_trips: collections.Counter[str]) -> None:
    """Two read units on one pooled connection; what the second one sent is counted."""
    await reads.run(backend_pid)
    round_trips.clear()
    await reads.run(backend_pid)


async def test_a_read_unit_is_one_round_trip(reads, postgres_only, round_trips):
    await second_read_unit(reads, round_trips)
    # No BEGIN/ROLLBACK, no connection check: the statement alone (asyncpg runs it as a
    # cached prepared statement, which these counters do not see).
    assert sum(round_trips.values()) == 0, round_trips


async def test_an_idle_connection_is_checked_first(reads, postgres_only, round_trips, monkeypatch):
    monkeypatch.setattr(db_module, "PING_AFTER_IDLE_SECONDS", 0.0)
    await second_read_unit(reads, round_trips)
    assert round_trips == {"fetchrow ;": 1}


async def test_a_dropped_connection_is_replaced_after_idling(
    database_url, engine, reads, postgres_only, monkeypatch
):
    """The server dropped the pooled connections (a restart, an idle timeout): the next
    request gets fresh ones instead of an error, on the read and on the write pool."""
    monkeypatch.setattr(db_module, "PING_AFTER_IDLE_SECONDS", 0.0)
    sessions = session_factory(engine)
    read_pid = await reads.run(backend_pid)
    async with sessions() as db:
        write_pid = await db.scalar(text("SELECT pg_backend_pid()"))
    killer = await asyncpg.connect(database_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        for pid in (read_pid, write_pid):
            assert await killer.fetchval("SELECT pg_terminate_backend($1)", pid)
    finally:
        await killer.close()
    assert await reads.run(backend_pid) not in (read_pid, write_pid)
    async with sessions() as db:
        assert await db.scalar(text("SELECT pg_backend_pid()")) not in (read_pid, write_pid)
