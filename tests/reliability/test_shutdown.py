"""A clean stop: SIGTERM to `flowstudio serve` with event streams open and generations running
ends the streams with `reconnect`, exits within the grace period, and hands the unfinished
generations back at once, so a second worker finishes each of them exactly once."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from flowstudio.db import create_engine
from flowstudio.generations.models import Generation
from tests.reliability.cluster import Api, Deployment, process_group

GRACE = 2.0


async def read_stream(api: Api, run_id: str, lines: list[str], connected: asyncio.Event) -> None:
    async with api.http.stream(
        "GET", f"/api/runs/{run_id}/events", timeout=httpx.Timeout(10, read=None)
    ) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith(": connected"):
                connected.set()
            lines.append(line)


async def rows(database_url: str, ids: list[str]) -> list[Any]:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            result = await connection.execute(
                select(
                    Generation.id, Generation.status, Generation.attempts, Generation.output
                ).where(Generation.id.in_([uuid.UUID(i) for i in ids]))
            )
            return list(result.all())
    finally:
        await engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database of this test's own that separate processes share (set up outside the
    test's event loop)."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'flowstudio.db'}"
    return request.getfixturevalue("pg_database_url")


async def test_sigterm_with_open_streams_and_running_generations(
    tmp_path: Path, database_url: str
) -> None:
    deployment = Deployment(
        root=tmp_path / "deployment",
        database_url=database_url,
        storage={"storage_url": f"file://{tmp_path / 'objects'}"},
        settings={"shutdown_grace_seconds": GRACE},
    )
    async with process_group(deployment) as group:
        serve = await group.start("serve")
        api = await Api.sign_up(serve.base_url)
        run_id = await api.start_run()
        streams: list[list[str]] = [[], [], []]
        connected = [asyncio.Event() for _ in streams]
        readers = [
            asyncio.create_task(read_stream(api, run_id, lines, ready))
            for lines, ready in zip(streams, connected, strict=True)
        ]
        await asyncio.wait_for(asyncio.gather(*(c.wait() for c in connected)), 20)
        response = await api.generate(run_id, prompt="a long one [slow:8]", count=2)
        assert response.status_code == 202, response.text
        ids = [g["id"] for g in response.json()["generations"]]

        deadline = time.monotonic() + 30
        while {row.status for row in await rows(database_url, ids)} != {"running"}:
            assert time.monotonic() < deadline, "the generations never started"
            await asyncio.sleep(0.1)

        stopped_at = time.monotonic()
        serve.proc.terminate()
        while serve.alive:
            assert time.monotonic() - stopped_at < GRACE + 2, (
                f"still running {GRACE + 2:g} s after SIGTERM:\n{serve.log_tail()}"
            )
            await asyncio.sleep(0.05)
        exited_after = time.monotonic() - stopped_at

        # Every stream was told to reconnect, then ended by the server.
        await asyncio.wait_for(asyncio.gather(*readers, return_exceptions=True), 5)
        for lines in streams:
            assert "event: reconnect" in lines, lines
        # Released at once: pending again, the interrupted attempt not counted.
        assert {(row.status, row.attempts) for row in await rows(database_url, ids)} == {
            ("pending", 0)
        }

        worker = await group.start("worker")
        deadline = time.monotonic() + 60
        while True:
            finished = await rows(database_url, ids)
            if all(row.status not in ("pending", "running") for row in finished):
                break
            assert time.monotonic() < deadline, "the second worker did not finish them"
            await asyncio.sleep(0.2)
        assert worker.alive
        # FlowStudio's own INFO lines reach the log under uvicorn too.
        log = serve.log_path.read_text(errors="replace")
        assert "flowstudio.worker: worker" in log and "releasing 2 unfinished" in log, log[-2000:]
        for row in finished:
            assert (row.status, row.attempts) == ("succeeded", 1), row
        await api.aclose()
    assert exited_after <= GRACE + 2
