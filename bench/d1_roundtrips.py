"""D1 over HTTP: what each main route costs in D1 requests, and its latency, beside SQLite.

    uv run python -m bench.d1_roundtrips [--rows 10000] [--calls 200]

A local D1 (scripts/d1-local.sh, workerd through miniflare) and the embedded SQLite each hold
one user's history of `--rows` generations (a few made through the API, the rest copied from
them in SQL; with the worker off they stay pending, so the queue's limit is set above them:
its admission check still runs, as with the default limit).
`flowstudio serve` runs in process without its worker, so every D1 request counted is the
route's own. For each route: D1 requests per call (every HTTP request the D1
driver sends), and p50 / p99 of `--calls` calls over HTTP on loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text
from tests.fixtures.d1 import D1Requests, LocalD1

from bench.common import record, served, summary
from flowstudio import migrate
from flowstudio.db import create_engine
from flowstudio.generations.models import Generation

_COPY_BATCH = 1000
# Above the copied rows, which all wait in the queue: the limit is on, and never reached.
_LIMIT = 10**9


async def _copy_history(url: str, rows: int) -> None:
    """Grow the history to `rows` by copying the generations there are (new ids, unique keys)."""
    columns = [c.name for c in Generation.__table__.columns]
    fresh = {
        "id": "lower(hex(randomblob(16)))",
        "batch_id": "lower(hex(randomblob(16)))",
        "idempotency_key": "NULL",
        "object_key": "object_key || '-' || lower(hex(randomblob(4)))",
    }
    select_list = ", ".join(fresh.get(name, name) for name in columns)
    engine = create_engine(url)
    try:
        while True:
            async with engine.begin() as connection:
                have = (await connection.execute(text("SELECT count(*) FROM generations"))).scalar()
                if have >= rows:
                    return
                take = min(_COPY_BATCH, rows - have, have)
                await connection.execute(
                    text(
                        f"INSERT INTO generations ({', '.join(columns)}) "
                        f"SELECT {select_list} FROM generations LIMIT {take}"
                    )
                )
    finally:
        await engine.dispose()


async def _measure(
    base: str, counter: D1Requests | None, rows: int, calls: int, url: str
) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:
        response = await http.post(
            "/api/auth/register", json={"email": "bench@example.com", "password": "bench-pass"}
        )
        response.raise_for_status()
        headers = {"X-CSRF-Token": response.json()["csrf_token"]}
        run = (await http.post("/api/flows/quick/runs", json={}, headers=headers)).json()
        generate_url = f"/api/runs/{run['id']}/steps/image/generate"
        made = (await http.post(generate_url, json={"count": 3}, headers=headers)).json()
        first = made["generations"][0]["id"]
        await _copy_history(url, rows)

        routes: dict[str, Callable[[], Awaitable[httpx.Response]]] = {
            "GET /api/auth/me": lambda: http.get("/api/auth/me"),
            "GET /api/history?limit=50": lambda: http.get("/api/history?limit=50"),
            "GET /api/history?limit=50&q=image": lambda: http.get("/api/history?limit=50&q=image"),
            "GET /api/history/{id}": lambda: http.get(f"/api/history/{first}"),
            "GET /api/runs/{id}": lambda: http.get(f"/api/runs/{run['id']}"),
            "POST …/generate (1×)": lambda: http.post(
                generate_url, json={"count": 1}, headers=headers
            ),
        }
        results: dict[str, Any] = {}
        for name, call in routes.items():
            for _ in range(5):  # warm up
                (await call()).raise_for_status()
            times: list[float] = []
            before = counter.count if counter else 0
            for _ in range(calls):
                started = time.perf_counter()
                response = await call()
                times.append((time.perf_counter() - started) * 1000)
                response.raise_for_status()
            per_call = ((counter.count - before) / calls) if counter else None
            results[name] = {"d1_requests_per_call": per_call, **summary(times)}
            shown = f"{per_call:.2f}" if per_call is not None else "-"
            print(
                f"  {name:<36} D1 requests {shown:>5}   p50 {results[name]['p50']:7.2f} ms"
                f"   p99 {results[name]['p99']:7.2f} ms"
            )
        return results


async def main(rows: int, calls: int) -> None:
    figures: dict[str, Any] = {"rows": rows, "calls": calls}
    with tempfile.TemporaryDirectory(prefix="flowstudio-bench-d1-") as scratch:
        local = LocalD1(Path(scratch))
        local.start()
        if local.error:
            raise SystemExit(f"the local D1 did not start: {local.error}")
        try:
            url = local.url("bench")
            engine = create_engine(url)
            await migrate.upgrade(engine)
            await engine.dispose()
            print(f"D1 (local, {rows} generations)")
            with D1Requests() as counter:
                async with served(
                    run_worker=False, database_url=url, max_pending_per_user=_LIMIT
                ) as (
                    base,
                    _app,
                ):
                    figures["d1"] = await _measure(base, counter, rows, calls, url)
        finally:
            local.stop()
    print(f"SQLite ({rows} generations)")
    async with served(run_worker=False, max_pending_per_user=_LIMIT) as (base, app):
        sqlite_url = app.state.ctx.settings.resolved_database_url
        figures["sqlite"] = await _measure(base, None, rows, calls, sqlite_url)
    print(f"recorded in {record('d1_roundtrips', figures)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    asyncio.run(main(args.rows, args.calls))
