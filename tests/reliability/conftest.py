"""Fixtures for tests that run FlowStudio as separate processes.

`FLOWSTUDIO_TEST_LONG=1` runs many more crash rounds and fault cycles (minutes instead of
seconds). The figures each test measures are printed at the end of the run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.d1 import empty_d1
from tests.fixtures.db import PostgresServer, _postgres_unavailable
from tests.fixtures.storage import S3_TEST_CREDENTIALS, s3_storage_url
from tests.reliability.cluster import Deployment

LONG = os.environ.get("FLOWSTUDIO_TEST_LONG", "").lower() not in ("", "0", "false", "no")

_FIGURES: list[tuple[str, str]] = []


def rounds(ci: int, long: int) -> int:
    """How many rounds a crash test runs: `ci` by default, `long` with FLOWSTUDIO_TEST_LONG=1."""
    return long if LONG else ci


def record_figure(name: str, value: Any) -> None:
    """A measured figure, printed in the run's summary (and by the test with -s)."""
    print(f"[reliability] {name}: {value}")
    _FIGURES.append((name, str(value)))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _FIGURES:
        terminalreporter.section("reliability figures")
        for name, value in _FIGURES:
            terminalreporter.write_line(f"{name}: {value}")


@pytest.fixture
def pg_database_url(postgres_server: PostgresServer) -> str:
    """A fresh migrated PostgreSQL database of its own (separate processes share it)."""
    if postgres_server.error:
        _postgres_unavailable(postgres_server.error)
    return postgres_server.create_database(migrated=True)


@pytest.fixture
def s3_settings(moto_server_url: str, s3_bucket: str) -> dict[str, str]:
    return {
        "storage_url": s3_storage_url(moto_server_url, s3_bucket),
        "storage_access_key_id": S3_TEST_CREDENTIALS["access_key_id"],
        "storage_secret_access_key": S3_TEST_CREDENTIALS["secret_access_key"],
    }


@pytest.fixture
def pg_s3_deployment(tmp_path: Path, pg_database_url: str, s3_settings: dict) -> Deployment:
    return Deployment(tmp_path / "deployment", pg_database_url, s3_settings)


@pytest.fixture
def d1_s3_deployment(tmp_path: Path, d1_shared_url: str, s3_settings: dict) -> Deployment:
    """The seeds' own deployment: D1 for metadata (the session's local D1, emptied), an S3
    bucket (R2 in production) for images."""
    empty_d1(d1_shared_url)
    return Deployment(tmp_path / "deployment", d1_shared_url, s3_settings)


@pytest.fixture
def sqlite_local_deployment(tmp_path: Path) -> Deployment:
    """The embedded default: SQLite and the object directory inside one data dir."""
    data = tmp_path / "deployment" / "data"
    return Deployment(
        tmp_path / "deployment",
        f"sqlite+aiosqlite:///{data / 'flowstudio.db'}",
        {"storage_url": f"file://{data / 'objects'}"},
    )
