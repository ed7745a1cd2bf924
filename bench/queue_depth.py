"""The queue at depth: what a claim costs with 0 … 1,000,000 pending generations, what another
user's backlog does to a fresh user's generation, and how fast two workers drain a queue.

    uv run python -m bench.queue_depth [--backend sqlite|postgres|both]
        [--depths 0,1000,10000,100000,1000000] [--claims 300] [--skip-fresh] [--skip-drain]

1. Claim latency. Pending rows of 20 backlog users are loaded up to each depth; then a claimer
   takes up to 4 rows (at most 2 running per user, as a worker does) in its own transaction and
   commits, `--claims` times; the rows go back to pending afterwards (not timed), so the depth
   stays put. On SQLite the whole claim transaction holds the write lock, so its time is an
   upper bound of the lock's.
2. A fresh user beside a backlog. `flowstudio serve` (in process, worker included) with an
   empty queue, then with another user's 100,000 pending generations queued ahead (its first
   two running ones wait on a slow provider, as in an outage): the time of the fresh user's
   `POST …/generate` and until its image has succeeded, as seen on the run's event stream.
3. Drain rate. Two `flowstudio worker` processes with the `local` provider (256×256 images)
   against a backlog spread over 50 users: generations finished per second over a window,
   with 1,000 and with 100,000 pending.

PostgreSQL comes from FLOWSTUDIO_BENCH_POSTGRES_URL (default the local server as `postgres`);
a database `flowstudio_bench_queue` is dropped and created for each part.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import sqlite3
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from sqlalchemy import make_url, select, text, update

from bench.common import record, served, summary, watched_quick_run
from bench.serve import flowstudio_command
from flowstudio import migrate
from flowstudio.db import create_engine, session_factory, utcnow
from flowstudio.generations import repository
from flowstudio.generations.models import Generation
from flowstudio.ids import uuid7

PG_ADMIN_URL = os.environ.get(
    "FLOWSTUDIO_BENCH_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)
PG_DATABASE = "flowstudio_bench_queue"
BACKLOG_USERS = 20
_MIGRATION = importlib.import_module("flowstudio.migrations.versions.0005_user_queues")


# -- databases ---------------------------------------------------------------------------------


class Database:
    """A migrated, empty FlowStudio database on one backend, filled by bulk inserts."""

    def __init__(self, backend: str, workdir: Path) -> None:
        self.backend = backend
        self.workdir = workdir
        if backend == "sqlite":
            self.path = workdir / "queue.db"
            self.url = f"sqlite+aiosqlite:///{self.path}"
        else:
            self.url = make_url(PG_ADMIN_URL).set(database=PG_DATABASE).render_as_string(False)
        self.users: list[uuid.UUID] = []
        self.runs: dict[uuid.UUID, uuid.UUID] = {}

    @property
    def dsn(self) -> str:
        return make_url(self.url).set(drivername="postgresql").render_as_string(False)

    async def create(self) -> None:
        if self.backend == "sqlite":
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)  # noqa: ASYNC240
        else:
            admin = make_url(PG_ADMIN_URL).set(drivername="postgresql").render_as_string(False)
            connection = await asyncpg.connect(admin)
            try:
                await connection.execute(f"DROP DATABASE IF EXISTS {PG_DATABASE} WITH (FORCE)")
                await connection.execute(f"CREATE DATABASE {PG_DATABASE}")
            finally:
                await connection.close()
        await asyncio.to_thread(migrate.upgrade_sync, self.url)

    async def add_users(self, count: int) -> list[uuid.UUID]:
        users = [uuid7() for _ in range(count)]
        runs = {user: uuid7() for user in users}
        now = utcnow()
        user_rows = [(u, f"{u.hex}@example.com", "x", False, now) for u in users]
        run_rows = [(runs[u], u, "quick", "{}", "backlog", "{}", now, now) for u in users]
        user_sql = "INSERT INTO users(id, email, password_hash, is_admin, created_at) VALUES "
        run_sql = (
            "INSERT INTO runs(id, user_id, flow_slug, flow_snapshot, title, inputs, "
            "created_at, updated_at) VALUES "
        )
        if self.backend == "sqlite":
            with self._sqlite() as db:
                db.executemany(user_sql + "(?, ?, ?, ?, ?)", [_sqlite_row(r) for r in user_rows])
                db.executemany(
                    run_sql + "(?, ?, ?, ?, ?, ?, ?, ?)", [_sqlite_row(r) for r in run_rows]
                )
        else:
            connection = await asyncpg.connect(self.dsn)
            try:
                await connection.executemany(user_sql + "($1, $2, $3, $4, $5)", user_rows)
                await connection.executemany(
                    run_sql + "($1, $2, $3, $4::jsonb, $5, $6::jsonb, $7, $8)", run_rows
                )
            finally:
                await connection.close()
        self.users.extend(users)
        self.runs.update(runs)
        return users

    def _sqlite(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        return _Transaction(db)

    async def enqueue(
        self,
        users: list[uuid.UUID],
        count: int,
        *,
        prompt: str,
        size: int = 1024,
        status: str = "pending",
        settle: bool = True,
    ) -> None:
        """`count` rows (pending and due now, unless another status is given), spread round
        the given users; then a checkpoint (SQLite) or ANALYZE (PostgreSQL), as a database
        that grew over time would have had."""
        now = utcnow()
        params = json.dumps({"width": size, "height": size, "kind": "generate", "inputs": []})

        def rows(start: int, stop: int) -> Iterator[tuple]:
            for index in range(start, stop):
                user = users[index % len(users)]
                yield (
                    uuid7(), user, self.runs[user], "image", "quick", uuid7(), 0, "generated",
                    status, prompt, params, "local", "local-sketch", "{}", 0, now, now, now,
                )  # fmt: skip

        columns = (
            "id, user_id, run_id, step_id, flow_slug, batch_id, batch_index, source, status, "
            "prompt, params, provider, model, output, attempts, next_attempt_at, created_at, "
            "updated_at"
        )
        chunk = 50_000
        if self.backend == "sqlite":
            sql = f"INSERT INTO generations({columns}) VALUES ({', '.join('?' * 18)})"
            with self._sqlite() as db:
                for start in range(0, count, chunk):
                    stop = min(count, start + chunk)
                    db.executemany(sql, (_sqlite_row(r) for r in rows(start, stop)))
            if not settle:
                return
            db = sqlite3.connect(self.path)
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            db.close()
            return
        connection = await asyncpg.connect(self.dsn)
        try:
            # A bulk load (settle) is consistent by construction: the per-row triggers (foreign
            # keys, the queue's counts) are skipped and the counts rebuilt once, as the
            # migration does. Rows added while workers run go through the triggers.
            if settle:
                await connection.execute("SET session_replication_role = replica")
            for start in range(0, count, chunk):
                stop = min(count, start + chunk)
                await connection.copy_records_to_table(
                    "generations",
                    records=list(rows(start, stop)),
                    columns=[c.strip() for c in columns.split(",")],
                )
            if settle:
                await connection.execute("RESET session_replication_role")
                async with connection.transaction():
                    await connection.execute("DELETE FROM user_queues")
                    await connection.execute(
                        _MIGRATION._BACKFILL.format(never="'epoch'::timestamptz")
                    )
                await connection.execute("ANALYZE generations, user_queues")
        finally:
            await connection.close()

    async def requeue(self, user: uuid.UUID) -> None:
        """Every row of the user back to pending, due now (the queue's triggers follow)."""
        engine = create_engine(self.url)
        try:
            # In transactions of a few thousand rows, as requests and workers change them:
            # every change rewrites the user's queue row, and PostgreSQL keeps each version
            # of it until the transaction ends.
            while True:
                async with engine.begin() as connection:
                    batch = (
                        select(Generation.id)
                        .where(Generation.user_id == user, Generation.status != "pending")
                        .limit(2000)
                    )
                    changed = await connection.execute(
                        update(Generation)
                        .where(Generation.id.in_(batch))
                        .values(status="pending", next_attempt_at=utcnow())
                    )
                if not changed.rowcount:
                    break
            if self.backend == "postgres":
                async with engine.connect() as connection:
                    connection = await connection.execution_options(isolation_level="AUTOCOMMIT")
                    await connection.execute(text("ANALYZE generations, user_queues"))
        finally:
            await engine.dispose()
        if self.backend == "sqlite":
            db = sqlite3.connect(self.path)
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            db.close()


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, *exc: object) -> None:
        self.db.execute("COMMIT" if exc[0] is None else "ROLLBACK")
        self.db.close()


def _sqlite_row(row: tuple) -> tuple:
    def value(v: Any) -> Any:
        if isinstance(v, uuid.UUID):
            return v.hex
        if isinstance(v, datetime):
            return v.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
        return v

    return tuple(value(v) for v in row)


# -- 1. claim latency --------------------------------------------------------------------------


async def claim_latency(backend: str, depths: list[int], claims: int, workdir: Path) -> dict:
    database = Database(backend, workdir)
    await database.create()
    backlog_users = await database.add_users(BACKLOG_USERS)
    engine = create_engine(database.url)
    sessions = session_factory(engine)
    results: dict[str, Any] = {}
    loaded = 0
    try:
        results["idle"] = await _claims(engine, sessions, claims)
        print(f"  {backend:10} an empty queue: claim p50 {results['idle']['p50']:6.2f} ms")
        # Two users with two rows each are always there: every claim below takes 4 rows, at
        # depth 0 too, and the depth is what other users have queued besides.
        await database.enqueue(await database.add_users(2), 4, prompt="probe")
        for depth in depths:
            started = time.perf_counter()
            await database.enqueue(backlog_users, depth - loaded, prompt="backlog")
            load_seconds = time.perf_counter() - started
            loaded = depth
            await engine.dispose()  # fresh connections see fresh statistics
            stats = await _claims(engine, sessions, claims)
            stats["load_seconds"] = round(load_seconds, 1)
            results[str(depth)] = stats
            print(
                f"  {backend:10} depth {depth:>9,}: claim p50 {stats['p50']:6.2f} ms  "
                f"p99 {stats['p99']:6.2f} ms  ({stats['claimed_per_claim']} rows a claim; "
                f"loaded in {load_seconds:.1f} s)",
                flush=True,
            )
    finally:
        await engine.dispose()
    first, last = results[str(depths[0])]["p50"], results[str(depths[-1])]["p50"]
    return {"depths": results, "deepest_over_shallowest": round(last / first, 2)}


async def _claims(engine: Any, sessions: Any, claims: int) -> dict[str, Any]:
    """`claims` claims of up to 4 rows (2 a user), each in its own transaction; the rows are
    put back to pending afterwards (not timed)."""
    times: list[float] = []
    claimed_counts: list[int] = []
    for index in range(claims + 10):
        begin = time.perf_counter()
        async with sessions() as db:
            rows = await repository.claim_pending(
                db,
                owner="bench",
                limit=4,
                per_user=2,
                now=utcnow(),
                lease=timedelta(seconds=30),
            )
            await db.commit()
        elapsed = (time.perf_counter() - begin) * 1000
        if index >= 10:  # the first few warm the connection and statement caches
            times.append(elapsed)
            claimed_counts.append(len(rows))
        if rows:
            async with engine.begin() as connection:
                await connection.execute(
                    update(Generation)
                    .where(Generation.id.in_([row.id for row in rows]))
                    .values(
                        status="pending",
                        lease_owner=None,
                        lease_expires_at=None,
                        attempts=0,
                    )
                )
    stats: dict[str, Any] = summary(times)
    stats["claimed_per_claim"] = round(sum(claimed_counts) / len(claimed_counts), 2)
    return stats


# -- 2. a fresh user beside a backlog ----------------------------------------------------------


async def _fresh_user(base: str, samples: int, email: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:
        watched = await watched_quick_run(http, email)
        headers, url, done, watcher = (
            watched.headers,
            watched.generate_url,
            watched.done,
            watched.watcher,
        )
        posts, finished = [], []
        try:
            for index in range(samples + 2):
                begin = time.perf_counter()
                response = await http.post(
                    url, json={"count": 1, "prompt": f"fresh {index}"}, headers=headers
                )
                posted = time.perf_counter()
                response.raise_for_status()
                generation_id = response.json()["generations"][0]["id"]
                deadline = time.monotonic() + 60
                while generation_id not in done and time.monotonic() < deadline:
                    await asyncio.sleep(0.002)
                if generation_id not in done:
                    raise SystemExit("a fresh user's generation did not finish within 60 s")
                if index >= 2:
                    posts.append((posted - begin) * 1000)
                    finished.append((done[generation_id] - begin) * 1000)
        finally:
            watcher.cancel()
    return {"post_ms": summary(posts), "succeeded_ms": summary(finished)}


async def fresh_user(backend: str, backlog: int, samples: int, workdir: Path) -> dict:
    """The same database both times, so that only the queue differs: the heavy user's rows
    are finished history first, then queued again."""
    database = Database(backend, workdir)
    await database.create()
    [heavy] = await database.add_users(1)
    await database.enqueue([heavy], backlog, prompt="backlog [slow:300]", status="succeeded")
    overrides = {"database_url": database.url, "secret_key": "bench-secret-key-0123456789"}
    results: dict[str, Any] = {}
    for label in ("empty", "backlog"):
        if label == "backlog":
            # The provider is down for the heavy user: its running rows wait, the rest queue.
            await database.requeue(heavy)
        async with served(**overrides) as (base, _app):
            results[label] = await _fresh_user(base, samples, f"fresh-{label}@example.com")
        if await asyncio.to_thread(_count_failed, database):
            raise SystemExit("generations failed during the measurement")
        post, done = results[label]["post_ms"], results[label]["succeeded_ms"]
        print(
            f"  {backend:10} {label:8}: generate POST p50 {post['p50']:6.1f} ms, "
            f"succeeded p50 {done['p50']:6.1f} ms",
            flush=True,
        )
    for figure in ("post_ms", "succeeded_ms"):
        results[f"{figure}_ratio"] = round(
            results["backlog"][figure]["p50"] / results["empty"][figure]["p50"], 2
        )
    return results


# -- 3. drain rate -----------------------------------------------------------------------------


def _count_succeeded(database: Database) -> int:
    return _count(database, "SELECT count(*) FROM generations WHERE status = 'succeeded'")


def _count_failed(database: Database) -> int:
    return _count(database, "SELECT count(*) FROM generations WHERE status = 'failed'")


def _count(database: Database, sql: str) -> int:
    if database.backend == "sqlite":
        db = sqlite3.connect(database.path)
        try:
            return db.execute(sql).fetchone()[0]
        finally:
            db.close()

    async def count() -> int:
        connection = await asyncpg.connect(database.dsn)
        try:
            return await connection.fetchval(sql)
        finally:
            await connection.close()

    return asyncio.run(count())


def _drain_window(
    database: Database, users: list[uuid.UUID], window: float, workdir: Path
) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWSTUDIO_")}
    env.update(
        {
            "FLOWSTUDIO_DATA_DIR": str(workdir / "data"),
            "FLOWSTUDIO_DATABASE_URL": database.url,
            "FLOWSTUDIO_SECRET_KEY": "bench-secret-key-0123456789",
        }
    )
    workers = [
        subprocess.Popen(
            [*flowstudio_command(), "worker"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=(workdir / f"worker-{index}.log").open("ab"),
        )
        for index in range(2)
    ]
    try:
        deadline = time.monotonic() + 120
        while _count_succeeded(database) < 20:  # both started and warm
            if _count_failed(database):
                raise SystemExit(f"generations failed; see {workdir}/worker-*.log and the rows")
            if time.monotonic() > deadline:
                raise SystemExit(f"the workers did not start; see {workdir}/worker-*.log")
            time.sleep(0.2)
        first, begin = _count_succeeded(database), time.perf_counter()
        # The backlog is kept where it was: what finished is queued again twice a second.
        topped, topped_up = first, 0
        while time.perf_counter() - begin < window:
            time.sleep(0.5)
            done = _count_succeeded(database)
            asyncio.run(
                database.enqueue(users, done - topped, prompt="drain", size=256, settle=False)
            )
            topped_up += done - topped
            topped = done
        last, end = _count_succeeded(database), time.perf_counter()
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(30)
    return {"finished": last - first, "seconds": round(end - begin, 2), "topped_up": topped_up}


async def drain(backend: str, backlogs: list[int], window: float, workdir: Path) -> dict:
    results: dict[str, Any] = {}
    for backlog in backlogs:
        database = Database(backend, workdir)
        await database.create()
        users = await database.add_users(50)
        await database.enqueue(users, backlog, prompt="drain", size=256)
        measured = await asyncio.to_thread(_drain_window, database, users, window, workdir)
        measured["per_second"] = round(measured["finished"] / measured["seconds"], 1)
        results[str(backlog)] = measured
        print(
            f"  {backend:10} backlog {backlog:>7,}: {measured['per_second']:6.1f} generations/s "
            f"({measured['finished']} in {measured['seconds']} s)",
            flush=True,
        )
    rates = [results[str(b)]["per_second"] for b in backlogs]
    results["slowest_over_fastest"] = round(min(rates) / max(rates), 2)
    return results


# -- main --------------------------------------------------------------------------------------


async def run_backend(backend: str, args: argparse.Namespace) -> dict[str, Any]:
    payload: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="flowstudio-queue-") as tmp:
        workdir = Path(tmp)
        print(f"{backend}: claim latency", flush=True)
        payload["claim"] = await claim_latency(backend, args.depths, args.claims, workdir)
        if not args.skip_fresh:
            print(f"{backend}: a fresh user beside a backlog of {args.backlog:,}", flush=True)
            payload["fresh_user"] = await fresh_user(backend, args.backlog, args.samples, workdir)
        if not args.skip_drain:
            print(f"{backend}: drain rate, two worker processes", flush=True)
            payload["drain"] = await drain(backend, args.drain_backlogs, args.window, workdir)
    return payload


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument(
        "--depths",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[0, 1000, 10_000, 100_000, 1_000_000],
    )
    parser.add_argument("--claims", type=int, default=300)
    parser.add_argument("--backlog", type=int, default=100_000)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument(
        "--drain-backlogs", type=lambda s: [int(x) for x in s.split(",")], default=[1000, 100_000]
    )
    parser.add_argument("--window", type=float, default=15.0)
    parser.add_argument("--skip-fresh", action="store_true")
    parser.add_argument("--skip-drain", action="store_true")
    args = parser.parse_args()
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    for backend in backends:
        payload = asyncio.run(run_backend(backend, args))
        path = record(f"queue_depth_{backend}", {"args": vars(args), **payload})
        print(f"recorded {path}")


if __name__ == "__main__":
    main()
