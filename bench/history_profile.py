"""Where a `GET /api/history` request spends its time, in-process (no sockets).

    uv run python -m bench.history_profile [--backend sqlite|postgres] [--requests 500]
        [--query "limit=50"] [--html profile.html]

Uses the database `bench.history_depth` filled (run that first), gives the heavy user an API
token, and drives the app through `httpx.ASGITransport`: first a timed pass (per-request p50 of the
whole ASGI round trip), then the same requests under pyinstrument, whose call tree it prints
(and optionally writes as HTML). It answers "which layer costs what" for the history route.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path

import httpx
from pyinstrument import Profiler
from rich.console import Console

from bench import history_depth
from flowstudio.app import create_app
from flowstudio.config import Settings

console = Console()


async def _drive(client: httpx.AsyncClient, path: str, count: int) -> list[float]:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        response = await client.get(path)
        times.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
    return times


async def profile(args: argparse.Namespace) -> Profiler:
    url = history_depth.sqlite_url() if args.backend == "sqlite" else history_depth.postgres_url()
    setup = await history_depth.prepare(url, args, [])
    settings = Settings(
        _env_file=None,
        database_url=url,
        data_dir=Path(args.data_dir),
        secret_key=setup.secret,
    )
    app = create_app(settings, run_worker=False)
    transport = httpx.ASGITransport(app=app)
    headers = {"authorization": f"Bearer {setup.token}"}
    path = f"/api/history?{args.query}"
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=transport, base_url="http://bench", headers=headers
        ) as client:
            await _drive(client, path, args.warmup)
            cpu_started = time.process_time()
            times = await _drive(client, path, args.requests)
            cpu_ms = (time.process_time() - cpu_started) * 1000 / len(times)
            # CPU time (all threads of this process) is steadier than wall time on a busy host.
            console.print(
                f"{path}: p50 {statistics.median(times):.2f} ms wall, {cpu_ms:.2f} ms CPU a "
                f"request over {len(times)} requests (in-process ASGI, {args.backend})"
            )
            profiler = Profiler(interval=0.0002, async_mode="enabled")
            with profiler:
                await _drive(client, path, args.requests)
    console.print(profiler.output_text(unicode=True, color=False, show_all=False, flat=args.flat))
    return profiler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--query", default="limit=50")
    parser.add_argument("--html", default=None)
    parser.add_argument("--flat", action="store_true", help="self time per function")
    parser.add_argument("--data-dir", default="bench/data/profile")
    # prepare() reads these to place its cursors; the profile needs none of them.
    parser.add_argument("--heavy", type=int, default=200_000)
    parser.add_argument("--q", default="product")
    args = parser.parse_args()
    profiler = asyncio.run(profile(args))
    if args.html:
        Path(args.html).write_text(profiler.output_html())


if __name__ == "__main__":
    main()
