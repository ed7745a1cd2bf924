"""Throughput vs floor: `GET /api/history?limit=50` against a bare JSON route, same server, wrk.

    uv run python -m bench.throughput [--backend sqlite|postgres] [--rounds 5] [--seconds 5]
        [--connections 8] [--profile]

1. Reuses (or fills, once) the 1M-generation database of bench/history_depth.py. SQLite by
   default; `--backend postgres` uses `--pg-database` (default `flowstudio_bench_tp`, filled
   with `--rows`; the history-depth database `flowstudio_bench` is only reused, never refilled).
2. Gives the heavy user (200,000 generations) an API token and starts one
   `flowstudio serve --no-worker` (one uvicorn process, as shipped) on a free loopback port.
3. Runs wrk (`-t1 -c<connections>`) against `GET /api/history?limit=50` with the Bearer token
   and against `GET /healthz` (a plain JSON route: no database, no authentication, the same
   middleware), alternating, `--rounds` × `--seconds` each after a warm-up. A Lua `done()` hook
   reports requests, errors and the latency percentiles. Every request must answer 2xx.
4. Reports the medians of req/s, p50 and p99 per route and the ratio history ÷ bare, with the
   server's peak RSS (process tree, /proc) during each route's runs; writes
   bench/results/throughput_<backend>.json. `--profile` also profiles 300 history requests
   in-process with pyinstrument (bench/results/throughput_profile_<backend>.txt).

Target: history req/s >= 0.5 × the bare route's. wrk is a Debian package:
`sudo apt-get install wrk` (or build it from https://github.com/wg/wrk).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from bench import history_depth
from bench.common import record
from bench.serve import RssSampler, ServeProcess
from flowstudio.db import create_engine

console = Console() if sys.stdout.isatty() else Console(width=140)

DATA = history_depth.DATA
TOKEN_NAME = "throughput-bench"
HISTORY = "/api/history?limit=50"
BARE = "/healthz"
TARGET_RATIO = 0.5

WRK_SCRIPT = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRK_JSON {\\"requests\\":%d,\\"duration_us\\":%d,\\"bytes\\":%d,\\"connect\\":%d," ..
    "\\"read\\":%d,\\"write\\":%d,\\"status\\":%d,\\"timeout\\":%d,\\"p50_us\\":%d," ..
    "\\"p90_us\\":%d,\\"p99_us\\":%d,\\"max_us\\":%d,\\"mean_us\\":%.1f}\\n",
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
"""


def require_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise SystemExit(
            "wrk is not installed. Install it with `sudo apt-get update && sudo apt-get install "
            "-y wrk` (Debian/Ubuntu) or `brew install wrk` (macOS), then run this again."
        )
    return path


def run_wrk(
    url: str,
    *,
    seconds: float,
    connections: int,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One wrk run; the figures its done() hook prints, plus req/s and the error total."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT)
    command = [
        require_wrk(),
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "30s",
        "-s",
        script.name,
    ]
    for name, value in (headers or {}).items():
        command += ["-H", f"{name}: {value}"]
    command.append(url)
    try:
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    finally:
        Path(script.name).unlink(missing_ok=True)
    line = next((x for x in out.splitlines() if x.startswith("WRK_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{out}")
    data = json.loads(line.removeprefix("WRK_JSON "))
    data["rps"] = data["requests"] / (data["duration_us"] / 1e6)
    data["errors"] = sum(data[k] for k in ("connect", "read", "write", "status", "timeout"))
    return data


# -- the database and the token ----------------------------------------------------------------


def filled_database(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """The history-depth database for the backend (reused when filled with the same params)."""
    if args.backend == "postgres" and args.pg_database != history_depth.PG_DATABASE:
        # A database of our own: point history_depth's filler at it, with its own metadata.
        history_depth.PG_DATABASE = args.pg_database
        history_depth._meta_path = lambda backend: DATA / f"throughput_{args.pg_database}.json"
    elif args.backend == "postgres":
        # Never refill the shared history-depth database from here.
        args.refill = False
        meta = DATA / "history_depth_postgres.meta.json"
        if not meta.exists():
            raise SystemExit(
                f"{history_depth.PG_DATABASE} is not filled; fill it with bench.history_depth "
                "or use another --pg-database"
            )
    fill = history_depth.ensure_filled(args.backend, args)
    url = history_depth.sqlite_url() if args.backend == "sqlite" else history_depth.postgres_url()
    return url, fill


async def issue_token(url: str) -> str:
    """A fresh API token for the heavy user (older ones of this benchmark are removed)."""
    engine = create_engine(url)
    try:
        _user, token = await history_depth.issue_heavy_token(engine, name=TOKEN_NAME)
    finally:
        await engine.dispose()
    return token


def history_server(backend: str, url: str) -> ServeProcess:
    data_dir = DATA / f"throughput_server_{backend}"
    return ServeProcess(
        data_dir=data_dir,
        settings={
            "FLOWSTUDIO_DATABASE_URL": url,
            "FLOWSTUDIO_SECRET_KEY": secrets.token_urlsafe(32),
        },
        worker=False,
    )


def check_routes(base: str, token: str) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    response = httpx.get(base + HISTORY, headers=headers, timeout=60)
    response.raise_for_status()
    if len(response.json()["items"]) != 50:
        raise SystemExit("GET /api/history?limit=50 did not return 50 items")
    bare = httpx.get(base + BARE, timeout=10)
    bare.raise_for_status()


# -- measuring ---------------------------------------------------------------------------------


def measure(
    server: ServeProcess, token: str, args: argparse.Namespace
) -> dict[str, list[dict[str, Any]]]:
    routes = {
        "history": (server.base + HISTORY, {"Authorization": f"Bearer {token}"}),
        "bare": (server.base + BARE, {}),
    }
    for name, (url, headers) in routes.items():
        console.print(f"warm-up {name} ({args.warmup:g} s)…")
        run_wrk(url, seconds=args.warmup, connections=args.connections, headers=headers)
    results: dict[str, list[dict[str, Any]]] = {"history": [], "bare": []}
    for i in range(args.rounds):
        order = ("history", "bare") if i % 2 == 0 else ("bare", "history")
        for name in order:
            url, headers = routes[name]
            with RssSampler(server.pid) as rss:
                run = run_wrk(
                    url, seconds=args.seconds, connections=args.connections, headers=headers
                )
            run["rss"] = rss.summary()
            results[name].append(run)
            console.print(
                f"round {i + 1}/{args.rounds} {name}: {run['rps']:.0f} req/s, "
                f"p50 {run['p50_us'] / 1000:.1f} ms, p99 {run['p99_us'] / 1000:.1f} ms, "
                f"errors {run['errors']}, peak RSS {run['rss']['peak_mib']} MiB"
            )
    return results


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "rounds": len(runs),
        "rps_median": round(statistics.median(r["rps"] for r in runs), 1),
        "rps_all": [round(r["rps"], 1) for r in runs],
        "p50_ms_median": round(statistics.median(r["p50_us"] for r in runs) / 1000, 2),
        "p99_ms_median": round(statistics.median(r["p99_us"] for r in runs) / 1000, 2),
        "max_ms": round(max(r["max_us"] for r in runs) / 1000, 1),
        "requests": sum(r["requests"] for r in runs),
        "errors": sum(r["errors"] for r in runs),
        "peak_rss_mib": max(r["rss"]["peak_mib"] for r in runs),
    }


async def profile_history(url: str, token: str, backend: str, count: int = 300) -> Path:
    """pyinstrument over `count` in-process history requests (ASGI, no network)."""
    from pyinstrument import Profiler

    from flowstudio.app import create_app
    from flowstudio.config import Settings

    with tempfile.TemporaryDirectory(prefix="flowstudio-profile-") as data_dir:
        settings = Settings(_env_file=None, data_dir=Path(data_dir), database_url=url)
        app = create_app(settings, run_worker=False)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            headers = {"Authorization": f"Bearer {token}"}
            async with httpx.AsyncClient(
                transport=transport, base_url="http://bench", headers=headers
            ) as http:
                for _ in range(20):
                    (await http.get(HISTORY)).raise_for_status()
                profiler = Profiler(interval=0.0005, async_mode="enabled")
                profiler.start()
                for _ in range(count):
                    (await http.get(HISTORY)).raise_for_status()
                profiler.stop()
    path = Path(__file__).parent / "results" / f"throughput_profile_{backend}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = profiler.output_text(unicode=False, color=False, show_all=False)
    # Paths relative to the checkout, so the recorded profile names no machine.
    path.write_text(text.replace(str(Path(__file__).parent.parent) + "/", ""))
    return path


def report(payload: dict[str, Any]) -> None:
    table = Table(
        title=f"wrk -t1 -c{payload['method']['connections']}, {payload['method']['rounds']} × "
        f"{payload['method']['seconds']:g} s per route, interleaved — {payload['database']}"
    )
    for column in ("route", "req/s (median)", "p50 ms", "p99 ms", "errors", "peak RSS MiB"):
        table.add_column(column, justify="left" if column == "route" else "right")
    for name, label in (("history", f"GET {HISTORY}"), ("bare", f"GET {BARE}")):
        s = payload["routes"][name]
        table.add_row(
            label,
            f"{s['rps_median']:,.0f}",
            f"{s['p50_ms_median']:.1f}",
            f"{s['p99_ms_median']:.1f}",
            str(s["errors"]),
            f"{s['peak_rss_mib']:.0f}",
        )
    console.print(table)
    ratio = payload["ratio"]
    style = "green" if payload["target_met"] else "red"
    console.print(
        f"history ÷ bare = [{style}]{ratio:.3f}[/{style}] (target ≥ {TARGET_RATIO}); per round: "
        + ", ".join(f"{r:.3f}" for r in payload["ratio_per_round"])
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument(
        "--pg-database",
        default="flowstudio_bench_tp",
        help="PostgreSQL database to fill/reuse (only with --backend postgres)",
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--heavy", type=int, default=None, help="default: min(200000, rows/5)")
    parser.add_argument("--users", type=int, default=1_000)
    parser.add_argument("--seed", type=int, default=20261122)
    parser.add_argument("--refill", action="store_true")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--warmup", type=float, default=2)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--profile", action="store_true", help="also profile history requests")
    parser.add_argument("--tag", default="", help="suffix of the results file name")
    args = parser.parse_args()
    args.heavy = args.heavy or min(200_000, args.rows // 5)
    require_wrk()

    url, fill = filled_database(args)
    token = asyncio.run(issue_token(url))
    server = history_server(args.backend, url)
    console.print("starting flowstudio serve --no-worker…")
    with server:
        check_routes(server.base, token)
        console.print(f"serving on {server.base} (log {server.log_path})")
        results = measure(server, token, args)
    history, bare = summarize(results["history"]), summarize(results["bare"])
    ratio = history["rps_median"] / bare["rps_median"]
    per_round = [
        h["rps"] / b["rps"] for h, b in zip(results["history"], results["bare"], strict=True)
    ]
    payload: dict[str, Any] = {
        "backend": args.backend,
        "database": history_depth._database_version(args.backend),
        "method": {
            "tool": subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split(
                "\n"
            )[0],
            "threads": 1,
            "connections": args.connections,
            "rounds": args.rounds,
            "seconds": args.seconds,
            "warmup_seconds": args.warmup,
            "history": f"GET {HISTORY} (Bearer token of the heavy user, first page)",
            "bare": f"GET {BARE} (plain JSON, no database, no authentication)",
            "server": "flowstudio serve --no-worker: one uvicorn process, log level info",
            "order": "alternating per round (history first on odd rounds)",
        },
        "dataset": {
            "generations": args.rows,
            "heavy_user_generations": args.heavy,
            "users": args.users,
            "pg_database": args.pg_database if args.backend == "postgres" else None,
        },
        "fill": fill,
        "routes": {"history": history, "bare": bare},
        "ratio": round(ratio, 4),
        "ratio_per_round": [round(r, 4) for r in per_round],
        "target": TARGET_RATIO,
        "target_met": ratio >= TARGET_RATIO,
        "runs": results,
    }
    if args.profile:
        path = asyncio.run(profile_history(url, token, args.backend))
        payload["profile"] = str(path.relative_to(Path(__file__).parent.parent))
        console.print(f"profile written to {path}")
    report(payload)
    path = record(f"throughput_{args.backend}{args.tag}", payload)
    console.print(f"recorded in {path}")
    if history["errors"] or bare["errors"]:
        console.print("[red]some requests failed (non-2xx or socket errors)[/red]")
        raise SystemExit(1)


if __name__ == "__main__":
    main()
