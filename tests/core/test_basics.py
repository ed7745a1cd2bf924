"""Identifiers, UTC timestamps and settings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from flowstudio.auth.models import User
from flowstudio.config import Settings
from flowstudio.db import create_engine, session_factory
from flowstudio.ids import uuid7


def test_uuid7_is_version_7_and_increasing():
    ids = [uuid7() for _ in range(10_000)]
    assert all(i.version == 7 for i in ids)
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    # The hex form (how SQLite stores it) sorts the same way.
    assert [i.hex for i in ids] == sorted(i.hex for i in ids)


async def test_timestamps_round_trip_as_aware_utc(database_url):
    engine = create_engine(database_url)
    sessions = session_factory(engine)
    plus_two = timezone(timedelta(hours=2))
    local_time = datetime(2026, 1, 2, 12, 0, tzinfo=plus_two)
    try:
        async with sessions() as db:
            db.add(User(email="t@example.com", password_hash="x", created_at=local_time))
            await db.commit()
        async with sessions() as db:
            user = await db.scalar(select(User))
            assert user.created_at == local_time
            assert user.created_at.tzinfo is not None
            assert user.created_at.utcoffset() == timedelta(0)
            # Comparisons in SQL agree with Python's on both backends.
            earlier = datetime(2026, 1, 2, 10, 30, tzinfo=UTC)
            later = datetime(2026, 1, 2, 9, 30, tzinfo=UTC)
            assert await db.scalar(select(User.id).where(User.created_at < earlier)) is not None
            assert await db.scalar(select(User.id).where(User.created_at < later)) is None
    finally:
        await engine.dispose()


def test_secret_key_is_generated_once(tmp_path):
    first = Settings(_env_file=None, data_dir=tmp_path).secret
    second = Settings(_env_file=None, data_dir=tmp_path).secret
    assert first == second and len(first) >= 32
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0


def test_placeholder_secret_refused_in_production(tmp_path):
    with pytest.raises(ValueError, match="placeholder"):
        Settings(_env_file=None, data_dir=tmp_path, environment="production", secret_key="changeme")
    Settings(_env_file=None, data_dir=tmp_path, environment="development", secret_key="changeme")


def test_defaults_point_into_the_data_dir(tmp_path):
    settings = Settings(_env_file=None, data_dir=tmp_path)
    assert settings.resolved_database_url == f"sqlite+aiosqlite:///{tmp_path / 'flowstudio.db'}"
    assert settings.resolved_storage_url == f"file://{tmp_path / 'objects'}"
