"""Memory: peak RSS of `flowstudio serve` under the throughput load and under 20 concurrent
downloads of a 50 MB asset (and of a 5 MB one, to show that it does not grow with file size).

    uv run python -m bench.memory [--seconds 10] [--connections 8] [--downloads 20]
        [--sizes 5,50]

RSS is the sum of VmRSS over the server's process tree, sampled every 20 ms from /proc, and the
kernel's own peak (VmHWM) reset right before each phase (`echo 5 > /proc/<pid>/clear_refs`);
the larger of the two is reported.

1. History: `flowstudio serve --no-worker` on the 1M-generation SQLite database of
   bench/history_depth.py (reused), wrk `-t1 -c<connections>` on `GET /api/history?limit=50`
   for `--seconds`, as in bench/throughput.py.
2. Downloads: `flowstudio serve` (embedded defaults, worker included) in a fresh data dir. A user
   uploads a small PNG to a quick run through the API; its stored object is then replaced by a
   PNG of the wanted size (random pixels, uncompressed) and the row's size/sha256 updated, since
   uploads stop at 25 MB. `--downloads` clients then fetch `GET /api/history/{id}/download` at
   once, each reading the whole body (sizes and one sha256 are checked).

A warm-up round of every size runs first (unmeasured), then the sizes in ascending order,
`--repeats` times each. Targets: peak <= 200 MB, and no growth with file size: the peak of the
largest size at most 10 MiB above the smallest's (5 → 50 → 200 MB by default).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import os
import secrets
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from PIL import Image
from rich.console import Console
from rich.table import Table
from sqlalchemy import update

from bench import throughput
from bench.common import record
from bench.serve import RssSampler, ServeProcess, tree_rss_kib
from flowstudio.db import create_engine
from flowstudio.generations.models import Generation

console = Console() if sys.stdout.isatty() else Console(width=140)

TARGET_MB = 200
TARGET_MIB = TARGET_MB * 1e6 / 2**20
GROWTH_TOLERANCE_MIB = 10


def noise_png(megabytes: float) -> bytes:
    """A valid PNG of about `megabytes` MB: random RGB pixels, stored without compression."""
    side = int((megabytes * 1e6 / 3) ** 0.5)
    image = Image.frombytes("RGB", (side, side), os.urandom(side * side * 3))
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=0)
    return out.getvalue()


def small_png(seed: int) -> bytes:
    image = Image.new("RGB", (64, 64), (seed % 256, 80, 160))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


# -- phase 1: history under wrk ----------------------------------------------------------------


def history_phase(args: argparse.Namespace) -> dict[str, Any]:
    ns = argparse.Namespace(
        backend="sqlite",
        pg_database=None,
        rows=1_000_000,
        heavy=200_000,
        users=1_000,
        seed=20261122,
        refill=False,
    )
    url, _fill = throughput.filled_database(ns)
    token = asyncio.run(throughput.issue_token(url))
    with throughput.history_server("sqlite", url) as server:
        throughput.check_routes(server.base, token)
        idle = tree_rss_kib(server.pid) / 1024
        headers = {"Authorization": f"Bearer {token}"}
        throughput.run_wrk(
            server.base + throughput.HISTORY,
            seconds=2,
            connections=args.connections,
            headers=headers,
        )
        with RssSampler(server.pid) as rss:
            run = throughput.run_wrk(
                server.base + throughput.HISTORY,
                seconds=args.seconds,
                connections=args.connections,
                headers=headers,
            )
    return {
        "phase": f"GET {throughput.HISTORY} under wrk -c{args.connections}, 1M SQLite",
        "server": "flowstudio serve --no-worker",
        "idle_mib": round(idle, 1),
        "rss": rss.summary(),
        "requests": run["requests"],
        "rps": round(run["rps"], 1),
        "errors": run["errors"],
    }


# -- phase 2: concurrent downloads -------------------------------------------------------------


async def prepare_assets(
    base: str, database_url: str, objects: Path, sizes: list[float]
) -> tuple[str, list[dict[str, Any]]]:
    async with httpx.AsyncClient(base_url=base, timeout=120) as http:
        response = await http.post(
            "/api/auth/register",
            json={"email": "memory@bench.example", "password": "memory-bench-password"},
        )
        response.raise_for_status()
        csrf = {"X-CSRF-Token": response.json()["csrf_token"]}
        token = (await http.post("/api/auth/tokens", json={"name": "memory"}, headers=csrf)).json()[
            "token"
        ]
    auth = {"Authorization": f"Bearer {token}"}
    assets = []
    engine = create_engine(database_url)
    try:
        async with httpx.AsyncClient(base_url=base, headers=auth, timeout=120) as http:
            run = (await http.post("/api/flows/quick/runs", json={})).json()
            for i, size in enumerate(sizes):
                uploaded = await http.post(
                    f"/api/runs/{run['id']}/steps/image/assets",
                    files={"file": (f"seed-{i}.png", small_png(i), "image/png")},
                )
                uploaded.raise_for_status()
                generation = uploaded.json()
                data = await asyncio.to_thread(noise_png, size)
                digest = hashlib.sha256(data).hexdigest()
                path = objects / generation["asset"]["key"]
                await asyncio.to_thread(path.write_bytes, data)
                async with engine.begin() as conn:
                    await conn.execute(
                        update(Generation)
                        .where(Generation.id == uuid.UUID(generation["id"]))
                        .values(size_bytes=len(data), sha256=digest)
                    )
                assets.append(
                    {"id": generation["id"], "mb": size, "bytes": len(data), "sha256": digest}
                )
                del data
    finally:
        await engine.dispose()
    return token, assets


async def download_all(base: str, token: str, asset: dict[str, Any], count: int) -> dict[str, Any]:
    url = f"/api/history/{asset['id']}/download"
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=count)
    headers = {"Authorization": f"Bearer {token}"}

    async def one(http: httpx.AsyncClient, check: bool) -> tuple[int, str | None, str]:
        digest = hashlib.sha256() if check else None
        received = 0
        async with http.stream("GET", url) as response:
            response.raise_for_status()
            kind = response.headers.get("content-length", "chunked")
            async for chunk in response.aiter_raw(1 << 20):
                received += len(chunk)
                if digest is not None:
                    digest.update(chunk)
        return received, digest.hexdigest() if digest else None, kind

    async with httpx.AsyncClient(
        base_url=base, headers=headers, limits=limits, timeout=300
    ) as http:
        started = time.perf_counter()
        results = await asyncio.gather(*(one(http, i == 0) for i in range(count)))
        elapsed = time.perf_counter() - started
    sizes = {r[0] for r in results}
    if sizes != {asset["bytes"]} or results[0][1] != asset["sha256"]:
        raise SystemExit(f"download of the {asset['mb']} MB asset returned wrong bytes: {sizes}")
    total = asset["bytes"] * count
    return {"seconds": round(elapsed, 2), "mb_per_s": round(total / 1e6 / elapsed, 1)}


def downloads_phase(args: argparse.Namespace) -> list[dict[str, Any]]:
    sizes = [float(s) for s in args.sizes.split(",")]
    results = []
    with tempfile.TemporaryDirectory(prefix="flowstudio-memory-") as tmp:
        data_dir = Path(tmp)
        settings = {
            "FLOWSTUDIO_SECRET_KEY": secrets.token_urlsafe(32),
            "FLOWSTUDIO_ARGON2_TIME_COST": "1",
            "FLOWSTUDIO_ARGON2_MEMORY_COST": "1024",
        }
        with ServeProcess(data_dir=data_dir, settings=settings) as server:
            url = f"sqlite+aiosqlite:///{data_dir / 'flowstudio.db'}"
            token, assets = asyncio.run(
                prepare_assets(server.base, url, data_dir / "objects", sizes)
            )
            # A warm-up round of every size first: the allocator's arenas (one per thread of
            # the file-reading pool) settle at their working size once, whatever the order.
            cold_idle = tree_rss_kib(server.pid) / 1024
            with RssSampler(server.pid) as rss:
                for asset in assets:
                    asyncio.run(download_all(server.base, token, asset, args.downloads))
            results.append(
                {
                    "phase": f"warm-up: {args.downloads} concurrent downloads of each size "
                    "(cold server)",
                    "server": "flowstudio serve (embedded defaults, local store)",
                    "asset_mb": None,
                    "idle_mib": round(cold_idle, 1),
                    "rss": rss.summary(),
                    "mb_per_s": None,
                }
            )
            idle = tree_rss_kib(server.pid) / 1024
            for asset in sorted(assets, key=lambda a: a["bytes"]):
                for repeat in range(args.repeats):
                    with RssSampler(server.pid) as rss:
                        timing = asyncio.run(
                            download_all(server.base, token, asset, args.downloads)
                        )
                    results.append(
                        {
                            "phase": f"{args.downloads} concurrent downloads of "
                            f"{asset['bytes'] / 1e6:.1f} MB",
                            "server": "flowstudio serve (embedded defaults, local store)",
                            "asset_mb": round(asset["bytes"] / 1e6, 1),
                            "repeat": repeat + 1,
                            "idle_mib": round(idle, 1),
                            "rss": rss.summary(),
                            **timing,
                        }
                    )
                    console.print(
                        f"{results[-1]['phase']} (#{repeat + 1}): peak RSS "
                        f"{rss.summary()['peak_mib']} MiB, {timing['mb_per_s']} MB/s"
                    )
    return results


def report(phases: list[dict[str, Any]], verdict: dict[str, Any]) -> None:
    table = Table(title="Peak RSS of flowstudio serve (process tree)")
    for column in ("phase", "idle MiB", "peak MiB", "end MiB", "throughput"):
        table.add_column(column, justify="left" if column == "phase" else "right")
    for p in phases:
        rate = f"{p['rps']} req/s" if "rps" in p else f"{p['mb_per_s'] or '-'} MB/s"
        peak = p["rss"]["peak_mib"]
        style = "green" if peak <= TARGET_MIB else "red"
        table.add_row(
            p["phase"],
            f"{p['idle_mib']:.0f}",
            f"[{style}]{peak:.0f}[/{style}]",
            f"{p['rss']['end_mib']:.0f}",
            rate,
        )
    console.print(table)
    for name, ok in verdict["checks"].items():
        console.print(f"{name}: " + ("[green]met[/green]" if ok else "[red]missed[/red]"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10, help="wrk run on the history")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--downloads", type=int, default=20, help="concurrent downloads")
    parser.add_argument("--sizes", default="5,50,200", help="asset sizes in MB, comma-separated")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--skip-history", action="store_true")
    args = parser.parse_args()
    throughput.require_wrk()

    phases = []
    if not args.skip_history:
        console.print("history under wrk on the 1M SQLite database…")
        phases.append(history_phase(args))
    console.print("concurrent downloads…")
    downloads = downloads_phase(args)
    phases.extend(downloads)

    peak = max(p["rss"]["peak_mib"] for p in phases)
    by_size: dict[float, float] = {}
    for d in downloads:
        if d["asset_mb"] is None:
            continue
        by_size[d["asset_mb"]] = max(by_size.get(d["asset_mb"], 0), d["rss"]["peak_mib"])
    small, large = by_size[min(by_size)], by_size[max(by_size)]
    growth = round(large - small, 1)
    # MiB of peak RSS per MB of file: buffering whole files would make this >= 1 (x downloads).
    slope = round(growth / (max(by_size) - min(by_size)), 4) if len(by_size) > 1 else 0.0
    verdict = {
        "peak_mib": peak,
        "target_mib": round(TARGET_MIB, 1),
        "download_peak_by_size_mib": {str(k): v for k, v in sorted(by_size.items())},
        "growth_largest_vs_smallest_mib": growth,
        "growth_mib_per_file_mb": slope,
        "checks": {
            f"peak RSS <= {TARGET_MB} MB ({TARGET_MIB:.1f} MiB)": peak <= TARGET_MIB,
            f"no growth with file size (<= {GROWTH_TOLERANCE_MIB} MiB)": growth
            <= GROWTH_TOLERANCE_MIB,
        },
    }
    report(phases, verdict)
    path = record(
        "memory",
        {
            "method": {
                "rss": "sum of VmRSS over the process tree every 20 ms, and VmHWM after "
                "resetting it (clear_refs 5) before each phase; the larger is the peak",
                "downloads": f"{args.downloads} concurrent httpx streams of "
                "GET /api/history/{id}/download, each read to the end",
                "history": f"wrk -t1 -c{args.connections} -d{args.seconds:g}s",
                "asset": "stored object replaced by an uncompressed PNG of random pixels",
            },
            "phases": phases,
            "verdict": verdict,
        },
    )
    console.print(f"recorded in {path}")


if __name__ == "__main__":
    main()
