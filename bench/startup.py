"""Start-up: time from running `flowstudio serve` to `/readyz` answering 200.

    uv run python -m bench.startup [--runs 10] [--database-url URL] [--skip-1m]

Each run spawns the installed `flowstudio serve` (web + in-process worker, as shipped) on a free
loopback port, polls `GET /readyz` every 20 ms from the moment of the spawn, records the time
of the first 200, and stops the server with SIGTERM. Scenarios, `--runs` times each:

- the 1M-generation SQLite database of bench/history_depth.py (reused; filled once if missing);
- a fresh, empty data dir every run (first start: secret key, SQLite file, all migrations);
- a restart on a small existing data dir (the same empty database, already migrated);
- with `--database-url`: that existing (migrated) database, e.g. PostgreSQL.

Reports median / p90 / min / max per scenario; writes bench/results/startup.json.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench import history_depth
from bench.common import percentile, record
from bench.serve import ServeProcess

console = Console() if sys.stdout.isatty() else Console(width=140)


def time_starts(
    name: str, runs: int, make: Any, *, settings: dict[str, str] | None = None
) -> dict[str, Any]:
    """`make(i)` gives the data dir of run i; every run is a new process."""
    times = []
    for i in range(runs):
        server = ServeProcess(
            data_dir=make(i),
            settings={"FLOWSTUDIO_SECRET_KEY": secrets.token_urlsafe(32), **(settings or {})},
        )
        try:
            times.append(server.start())
        finally:
            server.stop()
        console.print(f"{name} #{i + 1}: {times[-1] * 1000:.0f} ms")
    return {
        "scenario": name,
        "runs": runs,
        "median_ms": round(statistics.median(times) * 1000, 1),
        "p90_ms": round(percentile(times, 90) * 1000, 1),
        "min_ms": round(min(times) * 1000, 1),
        "max_ms": round(max(times) * 1000, 1),
        "all_ms": [round(t * 1000, 1) for t in times],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--database-url", default=None, help="an existing, migrated database")
    parser.add_argument("--skip-1m", action="store_true", help="skip the 1M SQLite database")
    args = parser.parse_args()

    scenarios = []
    with tempfile.TemporaryDirectory(prefix="flowstudio-startup-") as tmp:
        root = Path(tmp)
        if not args.skip_1m:
            fill = argparse.Namespace(
                rows=1_000_000, heavy=200_000, users=1_000, seed=20261122, refill=False
            )
            history_depth.ensure_filled("sqlite", fill)
            scenarios.append(
                time_starts(
                    "existing SQLite, 1M generations",
                    args.runs,
                    lambda i: root / "1m",
                    settings={"FLOWSTUDIO_DATABASE_URL": history_depth.sqlite_url()},
                )
            )
        scenarios.append(
            time_starts(
                "fresh empty data dir (creates + migrates)",
                args.runs,
                lambda i: root / f"fresh-{i}",
            )
        )
        scenarios.append(
            time_starts("existing SQLite, empty (restart)", args.runs, lambda i: root / "fresh-0")
        )
        if args.database_url:
            scenarios.append(
                time_starts(
                    f"existing {args.database_url.split(':', 1)[0]} database",
                    args.runs,
                    lambda i: root / "external",
                    settings={"FLOWSTUDIO_DATABASE_URL": args.database_url},
                )
            )

    table = Table(title="flowstudio serve → /readyz 200")
    for column in ("scenario", "runs", "median ms", "p90 ms", "min ms", "max ms"):
        table.add_column(column, justify="left" if column == "scenario" else "right")
    for s in scenarios:
        table.add_row(
            s["scenario"],
            str(s["runs"]),
            f"{s['median_ms']:.0f}",
            f"{s['p90_ms']:.0f}",
            f"{s['min_ms']:.0f}",
            f"{s['max_ms']:.0f}",
        )
    console.print(table)
    path = record(
        "startup",
        {
            "method": {
                "command": "flowstudio serve --host 127.0.0.1 --port <free> (web + worker)",
                "clock": "from subprocess spawn to the first 200 of GET /readyz, polled every "
                "20 ms; stopped with SIGTERM between runs",
            },
            "scenarios": scenarios,
        },
    )
    console.print(f"recorded in {path}")


if __name__ == "__main__":
    main()
