"""Load: simulated users against a real `flowstudio serve`, then the books must balance.

    uv run python -m bench.load [--users 20] [--duration 60] [--database-url URL] [--seed N]

1. Starts `flowstudio serve` (web + in-process worker + the `local` provider) on a free loopback
   port with a temporary data dir: SQLite there, or `--database-url` (PostgreSQL; migrated first).
2. Registers `--users` accounts through the API and gives each an API token.
3. For `--duration` seconds every user loops (closed loop, short random think time): starts runs,
   generates 1x / 3x candidates on ready steps (some with `Prefer: wait`; some purged for good
   a moment later, whatever state they are in by then), adopts a succeeded candidate, browses
   the history (cursor paging, filters, `q=` search), opens a detail and a thumbnail, deletes
   and restores. Every response is timed per route template.
4. Stops the users, waits for the queue to drain, and checks:
   - no 5xx, no transport error, no 4xx the script did not expect;
   - every generation id a `generate` answered with is persisted (unless purged) and nothing
     else is, both in the database (SQL) and in each user's history through the API (live +
     trash);
   - the object store holds no object that no row references, listed with no grace;
   - no generation is left `pending` or `running`; the server is still ready.
5. Prints p50/p99 per endpoint and the checks, writes bench/results/load.json, and exits 1
   when a check fails. It binds to 127.0.0.1 only and stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import secrets
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table
from sqlalchemy import func, select

from bench.common import percentile, record
from bench.serve import ServeProcess
from flowstudio.db import create_engine
from flowstudio.generations.models import Generation
from flowstudio.migrate import upgrade_sync

console = Console() if sys.stdout.isatty() else Console(width=140)

PASSWORD = "load-bench-password"
ACTIVE = ("pending", "running")
# Words that occur in the bundled flows' prompts (the `q=` searches).
SEARCH_WORDS = ("product", "studio", "poster", "lighthouse", "character", "image", "scene")
# What a user does next, with weights; each is a handful of requests.
ACTIONS = (
    ("start_run", 6),
    ("generate", 24),
    ("adopt", 12),
    ("browse", 26),
    ("open", 16),
    ("delete_restore", 10),
    ("runs", 6),
)
# 4xx answers a user can legitimately get; anything else is a failure of the check.
EXPECTED_4XX: dict[tuple[str, int], str] = {}


# -- recording ---------------------------------------------------------------------------------


@dataclass
class Stats:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    statuses: dict[str, Counter[int]] = field(default_factory=lambda: defaultdict(Counter))
    transport_errors: Counter[str] = field(default_factory=Counter)
    unexpected: list[dict[str, Any]] = field(default_factory=list)

    def add(self, route: str, status: int, ms: float) -> None:
        self.latencies[route].append(ms)
        self.statuses[route][status] += 1

    def table(self) -> list[dict[str, Any]]:
        rows = []
        for route in sorted(self.latencies, key=lambda r: (r.split()[1], r.split()[0])):
            values = self.latencies[route]
            statuses = self.statuses[route]
            rows.append(
                {
                    "endpoint": route,
                    "requests": len(values),
                    "p50_ms": round(percentile(values, 50), 1),
                    "p99_ms": round(percentile(values, 99), 1),
                    "max_ms": round(max(values), 1),
                    "2xx": sum(n for s, n in statuses.items() if 200 <= s < 300),
                    "3xx": sum(n for s, n in statuses.items() if 300 <= s < 400),
                    "4xx": sum(n for s, n in statuses.items() if 400 <= s < 500),
                    "5xx": sum(n for s, n in statuses.items() if s >= 500),
                    "transport_errors": self.transport_errors.get(route, 0),
                    "statuses": {str(s): n for s, n in sorted(statuses.items())},
                }
            )
        return rows


class Api:
    """One user's HTTP client: every call is timed under its route template."""

    def __init__(self, http: httpx.AsyncClient, stats: Stats, user: str) -> None:
        self.http = http
        self.stats = stats
        self.user = user

    async def call(
        self,
        method: str,
        route: str,
        url: str,
        *,
        ok: tuple[int, ...] = (200,),
        **kwargs: Any,
    ) -> httpx.Response | None:
        name = f"{method} {route}"
        start = time.perf_counter()
        try:
            response = await self.http.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            self.stats.transport_errors[name] += 1
            self.stats.unexpected.append(
                {"endpoint": name, "url": url, "error": f"{type(exc).__name__}: {exc}"}
            )
            return None
        self.stats.add(name, response.status_code, (time.perf_counter() - start) * 1000)
        if response.status_code not in ok and (name, response.status_code) not in EXPECTED_4XX:
            self.stats.unexpected.append(
                {
                    "endpoint": name,
                    "url": url,
                    "status": response.status_code,
                    "body": response.text[:300],
                }
            )
            return None
        return response


# -- one simulated user ------------------------------------------------------------------------


@dataclass
class User:
    index: int
    email: str
    user_id: uuid.UUID
    token: str
    accepted: set[uuid.UUID] = field(default_factory=set)
    purged: set[uuid.UUID] = field(default_factory=set)  # accepted, then purged for good
    runs: list[str] = field(default_factory=list)
    seen: list[dict[str, Any]] = field(default_factory=list)  # history items last browsed
    actions: Counter[str] = field(default_factory=Counter)


async def register(http: httpx.AsyncClient, stats: Stats, email: str) -> User | None:
    api = Api(http, stats, email)
    response = await api.call(
        "POST",
        "/api/auth/register",
        "/api/auth/register",
        ok=(201,),
        json={"email": email, "password": PASSWORD},
    )
    if response is None:
        return None
    body = response.json()
    token = await api.call(
        "POST",
        "/api/auth/tokens",
        "/api/auth/tokens",
        ok=(201,),
        json={"name": "load"},
        headers={"X-CSRF-Token": body["csrf_token"]},
    )
    if token is None:
        return None
    return User(0, email, uuid.UUID(body["user"]["id"]), token.json()["token"])


class Simulation:
    def __init__(self, api: Api, user: User, flows: list[dict[str, Any]], rng: random.Random):
        self.api = api
        self.user = user
        self.flows = flows
        self.rng = rng

    async def step(self) -> None:
        if not self.user.runs:
            action = "start_run"
        else:
            names, weights = zip(*ACTIONS, strict=True)
            action = self.rng.choices(names, weights=weights)[0]
        self.user.actions[action] += 1
        await getattr(self, action)()

    async def start_run(self) -> None:
        flow = self.rng.choice(self.flows)
        response = await self.api.call(
            "POST",
            "/api/flows/{slug}/runs",
            f"/api/flows/{flow['slug']}/runs",
            ok=(201,),
            json={"title": f"load {self.user.index}.{len(self.user.runs)}"},
        )
        if response is not None:
            self.user.runs.append(response.json()["id"])

    async def _run(self, run_id: str) -> dict[str, Any] | None:
        response = await self.api.call("GET", "/api/runs/{run_id}", f"/api/runs/{run_id}")
        return response.json() if response is not None else None

    async def generate(self) -> None:
        run_id = self.rng.choice(self.user.runs[-5:])
        run = await self._run(run_id)
        if run is None:
            return
        # Like a person: generate on a ready step whose earlier candidates have finished.
        steps = [
            s
            for s in run["steps"]
            if s["ready"] and not any(s["candidate_counts"].get(a) for a in ACTIVE)
        ]
        if not steps:
            return
        step = self.rng.choice(steps)
        count = 3 if self.rng.random() < 0.3 else 1
        headers = {}
        if self.rng.random() < 0.25:
            headers["Prefer"] = "wait=20"
        response = await self.api.call(
            "POST",
            "/api/runs/{run_id}/steps/{step_id}/generate",
            f"/api/runs/{run_id}/steps/{step['id']}/generate",
            ok=(200, 202),
            json={"count": count},
            headers=headers,
        )
        if response is not None:
            generations = response.json()["generations"]
            for generation in generations:
                self.user.accepted.add(uuid.UUID(generation["id"]))
            if self.rng.random() < 0.15:
                # Purged for good a moment later: before it is claimed, while it is drawn,
                # as its image is stored, or once it has succeeded.
                await asyncio.sleep(self.rng.uniform(0, 0.4))
                gid = self.rng.choice(generations)["id"]
                purged = await self.api.call(
                    "DELETE", "/api/history/{id}", f"/api/history/{gid}", params={"purge": "true"}
                )
                if purged is not None and purged.json().get("purged"):
                    self.user.purged.add(uuid.UUID(gid))

    async def adopt(self) -> None:
        run_id = self.rng.choice(self.user.runs[-5:])
        run = await self._run(run_id)
        if run is None:
            return
        steps = [s for s in run["steps"] if s["candidate_counts"].get("succeeded")]
        if not steps:
            return
        step = self.rng.choice(steps)
        route = "/api/runs/{run_id}/steps/{step_id}"
        listed = await self.api.call(
            "GET",
            route + "/assets",
            f"/api/runs/{run_id}/steps/{step['id']}/assets",
            params={"status": "succeeded", "limit": 10},
        )
        if listed is None or not listed.json()["items"]:
            return
        candidate = self.rng.choice(listed.json()["items"])
        await self.api.call(
            "POST",
            route + "/adopt",
            f"/api/runs/{run_id}/steps/{step['id']}/adopt",
            json={"generation_id": candidate["id"]},
        )

    def _filters(self) -> dict[str, Any]:
        kind = self.rng.choice(("none", "none", "flow", "status", "q", "run", "step", "trash"))
        if kind == "flow":
            return {"flow": self.rng.choice(self.flows)["slug"]}
        if kind == "status":
            return {"status": self.rng.choice(("succeeded", "failed", "succeeded,failed"))}
        if kind == "q":
            return {"q": self.rng.choice(SEARCH_WORDS)}
        if kind == "run":
            return {"run_id": self.rng.choice(self.user.runs)}
        if kind == "step":
            return {"step_id": self.rng.choice(("image", "object", "scene", "poster"))}
        if kind == "trash":
            return {"deleted": "true"}
        return {}

    async def browse(self) -> None:
        params: dict[str, Any] = {"limit": self.rng.choice((10, 20, 50)), **self._filters()}
        for _page in range(self.rng.randint(1, 4)):
            response = await self.api.call("GET", "/api/history", "/api/history", params=params)
            if response is None:
                return
            body = response.json()
            if "deleted" not in params:
                self.user.seen = body["items"] or self.user.seen
            if not body["next_cursor"]:
                return
            params = {**params, "cursor": body["next_cursor"]}

    async def _pick(self, *, terminal: bool) -> dict[str, Any] | None:
        if not self.user.seen:
            await self.browse()
        items = [
            i for i in self.user.seen if not terminal or i["status"] in ("succeeded", "failed")
        ]
        return self.rng.choice(items) if items else None

    async def open(self) -> None:
        item = await self._pick(terminal=False)
        if item is None:
            return
        gid = item["id"]
        # It may have been deleted meanwhile (by this user): the detail still answers.
        detail = await self.api.call("GET", "/api/history/{id}", f"/api/history/{gid}")
        if detail is None or detail.json()["status"] != "succeeded":
            return
        await self.api.call("GET", "/api/history/{id}/thumbnail", f"/api/history/{gid}/thumbnail")
        if self.rng.random() < 0.2:
            await self.api.call("GET", "/api/history/{id}/image", f"/api/history/{gid}/image")

    async def delete_restore(self) -> None:
        item = await self._pick(terminal=True)
        if item is None:
            return
        gid = item["id"]
        self.user.seen = [i for i in self.user.seen if i["id"] != gid]
        if self.rng.random() < 0.2:
            # A batch delete of one or two, like the history page's multi-select.
            others = [i["id"] for i in self.user.seen if i["status"] in ("succeeded", "failed")]
            ids = [gid, *self.rng.sample(others, min(1, len(others)))]
            self.user.seen = [i for i in self.user.seen if i["id"] not in ids]
            deleted = await self.api.call(
                "POST", "/api/history/delete", "/api/history/delete", json={"ids": ids}
            )
            restore = list(deleted.json()["deleted"]) if deleted is not None else []
        else:
            deleted = await self.api.call("DELETE", "/api/history/{id}", f"/api/history/{gid}")
            restore = [gid] if deleted is not None else []
        for rid in restore:
            if self.rng.random() < 0.6:  # the rest stays in the trash
                await self.api.call(
                    "POST", "/api/history/{id}/restore", f"/api/history/{rid}/restore"
                )

    async def runs(self) -> None:
        response = await self.api.call("GET", "/api/runs", "/api/runs", params={"limit": 20})
        if response is not None and self.rng.random() < 0.5:
            await self._run(self.rng.choice(self.user.runs))


async def user_loop(
    base: str,
    user: User,
    flows: list[dict[str, Any]],
    stats: Stats,
    *,
    stop_at: float,
    think: float,
    seed: int,
) -> None:
    rng = random.Random(seed * 1000 + user.index)
    headers = {"Authorization": f"Bearer {user.token}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=120) as http:
        sim = Simulation(Api(http, stats, user.email), user, flows, rng)
        # Spread the users' first requests over a moment instead of one thundering herd.
        await asyncio.sleep(rng.random() * min(1.0, think * 10))
        while time.monotonic() < stop_at:
            await sim.step()
            if think:
                await asyncio.sleep(rng.random() * think)


# -- verification ------------------------------------------------------------------------------


async def database_view(database_url: str, user_ids: list[uuid.UUID]) -> dict[str, Any]:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(Generation.id, Generation.status, Generation.deleted_at).where(
                        Generation.user_id.in_(user_ids)
                    )
                )
            ).all()
    finally:
        await engine.dispose()
    return {
        "ids": {row.id for row in rows},
        "by_status": dict(Counter(row.status for row in rows)),
        "deleted": sum(1 for row in rows if row.deleted_at is not None),
    }


async def active_count(database_url: str, user_ids: list[uuid.UUID]) -> int:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            return await conn.scalar(
                select(func.count()).where(
                    Generation.user_id.in_(user_ids), Generation.status.in_(ACTIVE)
                )
            )
    finally:
        await engine.dispose()


async def api_view(base: str, user: User) -> dict[str, Any]:
    """Every generation the user's history shows, live and in the trash, by cursor paging."""
    seen: dict[uuid.UUID, str] = {}
    headers = {"Authorization": f"Bearer {user.token}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=120) as http:
        for deleted in ("false", "true"):
            params: dict[str, Any] = {"limit": 100, "deleted": deleted}
            while True:
                response = await http.get("/api/history", params=params)
                response.raise_for_status()
                body = response.json()
                for item in body["items"]:
                    seen[uuid.UUID(item["id"])] = item["status"]
                if not body["next_cursor"]:
                    break
                params["cursor"] = body["next_cursor"]
    return {"ids": set(seen), "by_status": Counter(seen.values())}


async def unreferenced_objects(database_url: str, objects_url: str) -> list[str]:
    """Every object in the store that no row references, listed as it is now."""
    from flowstudio.storage import open_object_store

    store = open_object_store(objects_url)
    try:
        keys = {info.key async for info in store.list_prefix("")}
    finally:
        await store.close()
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            rows = (
                await conn.execute(select(Generation.object_key, Generation.thumbnail_key))
            ).all()
    finally:
        await engine.dispose()
    return sorted(keys - {key for row in rows for key in row if key})


def _check(name: str, ok: bool, detail: str) -> dict[str, Any]:
    return {"check": name, "ok": ok, "detail": detail}


async def verify(
    base: str,
    database_url: str,
    users: list[User],
    stats: Stats,
    *,
    drain_timeout: float,
    objects_url: str | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    user_ids = [u.user_id for u in users]
    purged = set().union(*(u.purged for u in users))
    accepted = set().union(*(u.accepted for u in users)) - purged
    started = time.monotonic()
    left = await active_count(database_url, user_ids)
    backlog = left
    while left and time.monotonic() - started < drain_timeout:
        await asyncio.sleep(0.5)
        left = await active_count(database_url, user_ids)
    drain_s = time.monotonic() - started

    in_db = await database_view(database_url, user_ids)
    via_api: set[uuid.UUID] = set()
    api_active = 0
    for user in users:
        view = await api_view(base, user)
        via_api |= view["ids"]
        api_active += sum(view["by_status"].get(s, 0) for s in ACTIVE)
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        ready = (await http.get("/readyz")).status_code

    five = sum(n for c in stats.statuses.values() for s, n in c.items() if s >= 500)
    transport = sum(stats.transport_errors.values())
    unexpected_4xx = [u for u in stats.unexpected if 400 <= u.get("status", 0) < 500]
    missing = accepted - in_db["ids"]
    extra = in_db["ids"] - accepted
    checks = [
        _check("no 5xx", five == 0, f"{five} responses ≥ 500"),
        _check("no transport errors", transport == 0, f"{transport} failed requests"),
        _check(
            "no unexpected 4xx",
            not unexpected_4xx,
            f"{len(unexpected_4xx)} unexpected"
            + (f", first: {unexpected_4xx[0]}" if unexpected_4xx else ""),
        ),
        _check(
            "accepted == persisted (SQL)",
            not missing and not extra,
            f"{len(accepted)} accepted, {len(in_db['ids'])} persisted, "
            f"{len(missing)} missing, {len(extra)} not accepted",
        ),
        _check(
            "accepted == history incl. trash (API)",
            via_api == accepted,
            f"{len(via_api)} listed, {len(accepted - via_api)} missing, "
            f"{len(via_api - accepted)} not accepted",
        ),
        _check(
            "nothing pending/running after the drain",
            left == 0 and api_active == 0,
            f"{left} in the database, {api_active} in the API after {drain_s:.1f} s "
            f"(backlog at stop: {backlog})",
        ),
        _check("server still ready", ready == 200, f"/readyz → {ready}"),
    ]
    unreferenced: list[str] | None = None
    if objects_url is not None:
        unreferenced = await unreferenced_objects(database_url, objects_url)
        checks.append(
            _check(
                "no object without a row (store listed with no grace)",
                not unreferenced,
                f"{len(unreferenced)} unreferenced"
                + (f", first: {unreferenced[0]}" if unreferenced else "")
                + f"; {len(purged)} generations purged during the load",
            )
        )
    books = {
        "accepted": len(accepted),
        "persisted": len(in_db["ids"]),
        "purged": len(purged),
        "unreferenced_objects": None if unreferenced is None else len(unreferenced),
        "listed_via_api": len(via_api),
        "persisted_by_status": in_db["by_status"],
        "in_trash": in_db["deleted"],
        "backlog_at_stop": backlog,
        "drain_seconds": round(drain_s, 1),
    }
    return checks, books


# -- the whole run -----------------------------------------------------------------------------


@dataclass
class LoadResult:
    checks: list[dict[str, Any]]
    books: dict[str, Any]
    endpoints: list[dict[str, Any]]
    totals: dict[str, Any]
    unexpected: list[dict[str, Any]]

    @property
    def ok(self) -> bool:
        return all(c["ok"] for c in self.checks)


async def run_load(
    base: str,
    database_url: str,
    *,
    users: int,
    duration: float,
    seed: int,
    think: float = 0.1,
    drain_timeout: float = 300.0,
    objects_url: str | None = None,
) -> LoadResult:
    """The load and its checks against a running server whose database is `database_url`
    (and whose object store is `objects_url`, when given: then no object may lack a row)."""
    stats = Stats()
    setup = Stats()
    tag = secrets.token_hex(4)
    async with httpx.AsyncClient(base_url=base, timeout=120) as http:
        # Sign-ups are argon2-hashed on purpose: a few at a time, and not part of the load.
        gate = asyncio.Semaphore(4)

        async def one(i: int) -> User | None:
            async with gate:
                async with httpx.AsyncClient(base_url=base, timeout=120) as own:
                    return await register(own, setup, f"load-{tag}-{i}@bench.example")

        signed = await asyncio.gather(*(one(i) for i in range(users)))
        if any(u is None for u in signed):
            raise RuntimeError(f"could not register the users: {setup.unexpected[:3]}")
        token = signed[0].token  # type: ignore[union-attr]
        flows_response = await http.get("/api/flows", headers={"Authorization": f"Bearer {token}"})
        flows_response.raise_for_status()
    people = [u for u in signed if u is not None]
    for i, user in enumerate(people):
        user.index = i
    flows = flows_response.json()["items"]

    started = time.monotonic()
    await asyncio.gather(
        *(
            user_loop(
                base,
                user,
                flows,
                stats,
                stop_at=started + duration,
                think=think,
                seed=seed,
            )
            for user in people
        )
    )
    elapsed = time.monotonic() - started
    checks, books = await verify(
        base, database_url, people, stats, drain_timeout=drain_timeout, objects_url=objects_url
    )
    requests = sum(len(v) for v in stats.latencies.values())
    actions: Counter[str] = Counter()
    for user in people:
        actions.update(user.actions)
    totals = {
        "users": users,
        "duration_s": round(elapsed, 1),
        "requests": requests,
        "requests_per_s": round(requests / elapsed, 1),
        "generations_accepted_per_s": round(books["accepted"] / elapsed, 2),
        "actions": dict(actions),
        "flows": [f["slug"] for f in flows],
    }
    return LoadResult(checks, books, stats.table(), totals, stats.unexpected[:20])


def _flowstudio_settings(database_url: str | None, fast_hashing: bool) -> dict[str, str]:
    settings = {"FLOWSTUDIO_SECRET_KEY": secrets.token_urlsafe(32)}
    if database_url:
        settings["FLOWSTUDIO_DATABASE_URL"] = database_url
    if fast_hashing:
        settings.update(
            {"FLOWSTUDIO_ARGON2_TIME_COST": "1", "FLOWSTUDIO_ARGON2_MEMORY_COST": "1024"}
        )
    return settings


async def serve_and_load(
    *,
    users: int,
    duration: float,
    seed: int,
    database_url: str | None = None,
    think: float = 0.1,
    drain_timeout: float = 300.0,
    fast_hashing: bool = False,
    data_dir: Path | None = None,
) -> tuple[LoadResult, dict[str, Any]]:
    """Start `flowstudio serve` (embedded, or on `database_url`), load it, check, stop it."""
    with tempfile.TemporaryDirectory(prefix="flowstudio-load-") as tmp:
        data = data_dir or Path(tmp)
        if database_url and not database_url.startswith("sqlite"):
            await asyncio.to_thread(upgrade_sync, database_url)
        url = database_url or f"sqlite+aiosqlite:///{data / 'flowstudio.db'}"
        server = ServeProcess(
            data_dir=data, settings=_flowstudio_settings(database_url, fast_hashing)
        )
        ready_s = await asyncio.to_thread(server.start)
        try:
            result = await run_load(
                server.base,
                url,
                users=users,
                duration=duration,
                seed=seed,
                think=think,
                drain_timeout=drain_timeout,
                objects_url=f"file://{data / 'objects'}",
            )
        finally:
            exit_code = await asyncio.to_thread(server.stop)
            clean = server.stopped_cleanly()
            log = server.log_text()
        tracebacks = log.count("Traceback (most recent call last)")
        result.checks.append(
            _check(
                "no tracebacks in the server log",
                tracebacks == 0,
                f"{tracebacks} tracebacks" + (f"; log: {_tail(log)}" if tracebacks else ""),
            )
        )
        result.checks.append(
            _check(
                "server stops cleanly on SIGTERM",
                clean,
                f"exit code {exit_code}, lifespan shutdown "
                + ("complete" if "Application shutdown complete" in log else "missing"),
            )
        )
        server_info = {
            "database": "postgresql" if url.startswith("postgresql") else "sqlite",
            "ready_seconds": round(ready_s, 2),
            "worker": "in-process (flowstudio serve), local provider",
        }
        return result, server_info


def _tail(log: str, lines: int = 30) -> str:
    return "\n".join(log.splitlines()[-lines:])


def report(result: LoadResult, server: dict[str, Any]) -> None:
    totals = result.totals
    table = Table(
        title=f"{totals['users']} users × {totals['duration_s']} s on {server['database']}: "
        f"{totals['requests']:,} requests ({totals['requests_per_s']}/s), "
        f"{result.books['accepted']:,} generations accepted"
    )
    for column in ("endpoint", "requests", "p50 ms", "p99 ms", "max ms", "4xx", "5xx", "errors"):
        table.add_column(column, justify="left" if column == "endpoint" else "right")
    for row in result.endpoints:
        table.add_row(
            row["endpoint"],
            f"{row['requests']:,}",
            f"{row['p50_ms']:.1f}",
            f"{row['p99_ms']:.1f}",
            f"{row['max_ms']:.1f}",
            str(row["4xx"]),
            f"[red]{row['5xx']}[/red]" if row["5xx"] else "0",
            f"[red]{row['transport_errors']}[/red]" if row["transport_errors"] else "0",
        )
    console.print(table)
    checks = Table(title="Checks")
    checks.add_column("check")
    checks.add_column("result")
    checks.add_column("detail", overflow="fold")
    for check in result.checks:
        mark = "[green]ok[/green]" if check["ok"] else "[red]FAILED[/red]"
        checks.add_row(check["check"], mark, check["detail"])
    console.print(checks)
    books = result.books
    console.print(
        f"persisted by status {books['persisted_by_status']}, {books['in_trash']} in the trash; "
        f"backlog at stop {books['backlog_at_stop']}, drained in {books['drain_seconds']} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    parser.add_argument(
        "--database-url",
        default=None,
        help="e.g. postgresql+asyncpg://postgres@127.0.0.1:5432/flowstudio_load "
        "(an existing database; migrated first). Default: SQLite in a temporary data dir.",
    )
    parser.add_argument("--think", type=float, default=0.1, help="max think time between actions")
    parser.add_argument("--drain-timeout", type=float, default=300.0)
    parser.add_argument("--seed", type=int, default=20261122)
    parser.add_argument("--name", default="load", help="results file: bench/results/NAME.json")
    args = parser.parse_args()
    if args.users < 1 or args.duration <= 0:
        parser.error("need --users >= 1 and --duration > 0")

    console.print(
        f"[bold]Load: {args.users} users for {args.duration:g} s against flowstudio serve…[/bold]"
    )
    result, server = asyncio.run(
        serve_and_load(
            users=args.users,
            duration=args.duration,
            seed=args.seed,
            database_url=args.database_url,
            think=args.think,
            drain_timeout=args.drain_timeout,
        )
    )
    report(result, server)
    path = record(
        args.name,
        {
            "method": {
                "users": args.users,
                "duration_s": args.duration,
                "think_max_s": args.think,
                "seed": args.seed,
                "actions": dict(ACTIONS),
                "client": "httpx.AsyncClient per user, one asyncio loop, closed loop",
                "server": "flowstudio serve (web + in-process worker, local provider), "
                "uvicorn log level info",
            },
            "server": server,
            "totals": result.totals,
            "books": result.books,
            "checks": result.checks,
            "endpoints": result.endpoints,
            "unexpected": result.unexpected,
        },
    )
    console.print(f"recorded in {path}")
    if not result.ok:
        console.print("[red]load checks failed[/red]")
        raise SystemExit(1)


if __name__ == "__main__":
    main()
