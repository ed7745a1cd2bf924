"""Shared helpers for benchmarks: a temporary FlowStudio served by uvicorn on loopback."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from flowstudio.app import create_app
from flowstudio.config import Settings

RESULTS = Path(__file__).parent / "results"


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
    }


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50": round(statistics.median(values), 3),
        "p99": round(percentile(values, 99), 3),
        "mean": round(statistics.fmean(values), 3),
        "min": round(min(values), 3),
    }


def record(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {
        "benchmark": name,
        "when": datetime.now(UTC).isoformat(),
        "machine": machine(),
        **data,
    }
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


@asynccontextmanager
async def served(*, run_worker: bool = True, **overrides: Any) -> AsyncIterator[tuple[str, Any]]:
    """FlowStudio with embedded defaults in a temporary data dir, on a free loopback port."""
    with tempfile.TemporaryDirectory(prefix="flowstudio-bench-") as data_dir:
        settings = Settings(_env_file=None, data_dir=Path(data_dir), **overrides)
        app = create_app(settings, run_worker=run_worker)
        async with app.router.lifespan_context(app):
            config = uvicorn.Config(
                app, host="127.0.0.1", port=0, lifespan="off", log_level="warning"
            )
            server = uvicorn.Server(config)
            task = asyncio.create_task(server.serve())
            while not server.started:
                await asyncio.sleep(0.01)
            port = server.servers[0].sockets[0].getsockname()[1]
            try:
                yield f"http://127.0.0.1:{port}", app
            finally:
                server.should_exit = True
                await task


async def watch_finishes(
    http: httpx.AsyncClient, run_id: str, done: dict[str, float], ready: asyncio.Event
) -> None:
    """Follow a run's event stream: when each generation ends (succeeded or failed), by id."""
    async with http.stream("GET", f"/api/runs/{run_id}/events", timeout=None) as response:
        ready.set()
        async for line in response.aiter_lines():
            if line.startswith("data:"):
                event = json.loads(line[5:])
                if event["status"] in ("succeeded", "failed"):
                    done[event["id"]] = time.perf_counter()


@dataclass
class WatchedRun:
    """A signed-up user's `quick` run, its event stream followed: `done` maps each finished
    generation's id to when its end arrived."""

    headers: dict[str, str]
    generate_url: str
    done: dict[str, float]
    watcher: asyncio.Task[None]


async def watched_quick_run(http: httpx.AsyncClient, email: str) -> WatchedRun:
    response = await http.post(
        "/api/auth/register", json={"email": email, "password": "bench-password"}
    )
    response.raise_for_status()
    headers = {"X-CSRF-Token": response.json()["csrf_token"]}
    run = (await http.post("/api/flows/quick/runs", json={}, headers=headers)).json()
    done: dict[str, float] = {}
    ready = asyncio.Event()
    watcher = asyncio.create_task(watch_finishes(http, run["id"], done, ready))
    await ready.wait()
    return WatchedRun(headers, f"/api/runs/{run['id']}/steps/image/generate", done, watcher)
