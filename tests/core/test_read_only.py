"""Read-only transactions: GET requests read beside writers and refuse to write."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest
from sqlalchemy import Connection, text
from sqlalchemy.exc import OperationalError

from flowstudio.auth.models import User
from flowstudio.db import (
    ReadOnlyViolation,
    session_factory,
)
from tests.fixtures.app import make_client

INSERT_USER = User.__table__.insert().values(email="x@example.com", password_hash="x")


async def count_users(engine) -> int:
    async with session_factory(engine)() as db:
        return await db.scalar(text("SELECT count(*) FROM users"))


async def test_read_only_sessions_refuse_writes(engine, reads):
    async with session_factory(reads.engine)() as db:
        assert await db.scalar(text("SELECT 1")) == 1
        with pytest.raises(ReadOnlyViolation):
            await db.execute(INSERT_USER)
        await db.rollback()
    assert await count_users(engine) == 0


async def test_reads_do_not_wait_for_a_writer(app, alice, backend):
    """A transaction holding SQLite's write lock (a busy worker, a long batch delete) must not
    hold up page loads: GETs take no write lock. Before, they queued for it."""
    created = await alice.post("/api/auth/tokens", json={"name": "script"})
    headers = {"Authorization": f"Bearer {created.json()['token']}"}
    # One request first, so the token's last-use bookkeeping (a write) is done.
    async with make_client(app) as script:
        assert (await script.get("/api/history", headers=headers)).status_code == 200
        async with app.state.ctx.sessions() as writer:
            # Takes the write lock on SQLite (BEGIN IMMEDIATE) and a row lock on PostgreSQL.
            await writer.execute(text("UPDATE users SET is_admin = is_admin"))
            response = await asyncio.wait_for(
                script.get("/api/history", headers=headers), timeout=20
            )
            assert response.status_code == 200
            runs = await asyncio.wait_for(script.get("/api/runs", headers=headers), timeout=20)
            assert runs.status_code == 200
            await writer.rollback()


async def test_postgres_reads_run_without_a_transaction(engine, reads, backend):
    """On PostgreSQL a read-only session is in autocommit (no BEGIN/COMMIT round trips): each
    statement is its own transaction, so now() moves between two statements."""
    if backend != "postgres":
        pytest.skip("SQLite reads begin a deferred transaction (see the test above)")
    async with session_factory(reads.engine)() as db:
        first = await db.scalar(text("SELECT now()"))
        await asyncio.sleep(0.01)
        second = await db.scalar(text("SELECT now()"))
        assert second > first
    async with session_factory(engine)() as db:
        first = await db.scalar(text("SELECT now()"))
        await asyncio.sleep(0.01)
        assert await db.scalar(text("SELECT now()")) == first


async def test_read_units_cannot_write(engine, reads):
    """`Reads` units (history pages) are refused writes: on SQLite by the connection itself
    (query_only), on PostgreSQL by the read-only engine's guard."""
    assert await reads.run(lambda connection: connection.scalar(text("SELECT 1"))) == 1
    with pytest.raises((ReadOnlyViolation, OperationalError)):
        await reads.run(lambda connection: connection.execute(INSERT_USER))
    assert await count_users(engine) == 0


async def test_a_sqlite_read_unit_sees_one_snapshot(engine, reads, backend):
    """A unit's statements (a search page's batches) read one snapshot, even when a writer
    commits between them."""
    if backend != "sqlite":
        pytest.skip("PostgreSQL units are single statements in autocommit")
    path = engine.url.database

    def count_around_a_commit(connection: Connection) -> tuple[int, int]:
        before = connection.scalar(text("SELECT count(*) FROM users"))
        writer = sqlite3.connect(path)
        writer.execute(
            "INSERT INTO users (id, email, password_hash, created_at, is_admin) "
            "VALUES ('00000000000000000000000000000001', 'w@example.com', 'x', "
            "'2026-01-01 00:00:00.000000', 0)"
        )
        writer.commit()
        writer.close()
        return before, connection.scalar(text("SELECT count(*) FROM users"))

    assert await reads.run(count_around_a_commit) == (0, 0)
    assert await count_users(engine) == 1
