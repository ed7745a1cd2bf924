"""The process lifecycle: heartbeats that nothing delays, bodies refused before they are read,
state that does not grow without bound, events that are never lost silently, strict JSON."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select

from flowstudio.app import create_app
from flowstudio.auth.models import LoginFailure, UserSession
from flowstudio.auth.ratelimit import LoginRateLimiter
from flowstudio.db import utcnow
from flowstudio.generations.events import RESYNC, Event
from flowstudio.generations.maintenance import collect_garbage
from flowstudio.generations.models import Generation
from flowstudio.generations.worker import Worker
from flowstudio.limits import JSON_BODY_LIMIT
from tests.fixtures.app import make_client
from tests.fixtures.flows import generate, start_run, wait_until

MB = 1024 * 1024


# -- heartbeats first --------------------------------------------------------------------------


@pytest.mark.parametrize("settings_overrides", [{"lease_seconds": 1.0}])
async def test_slow_maintenance_never_lets_a_lease_expire(app, alice):
    """A maintenance round that blocks for 5 leases: the job's lease is still extended, so a
    second worker never takes it over and it runs once."""
    ctx = app.state.ctx
    await app.state.worker.stop()
    rounds = 0

    async def slow_maintenance() -> None:
        nonlocal rounds
        rounds += 1
        await asyncio.sleep(5.0)

    first = Worker(ctx, ctx.bus, name="slow-maintenance", maintenance=slow_maintenance)
    second = Worker(ctx, ctx.bus, name="second")
    await first.start()
    try:
        run = await start_run(alice, flow="quick")
        [gen] = (
            await generate(alice, run["id"], "image", wait=False, prompt="long job [slow:4]")
        ).json()["generations"]

        async def running_here() -> bool:
            async with ctx.sessions() as db:
                row = await db.get(Generation, uuid.UUID(gen["id"]))
                return row.status == "running" and row.lease_owner == "slow-maintenance"

        await wait_until(running_here)
        await second.start()  # it would recover the row as soon as its lease expired

        async def finished() -> bool:
            async with ctx.sessions() as db:
                row = await db.get(Generation, uuid.UUID(gen["id"]), populate_existing=True)
                return row.status in ("succeeded", "failed")

        await wait_until(finished, timeout=20)
    finally:
        await second.stop(grace_seconds=5)
        await first.stop(grace_seconds=5)
    async with ctx.sessions() as db:
        row = await db.get(Generation, uuid.UUID(gen["id"]), populate_existing=True)
    assert rounds >= 1
    assert (row.status, row.attempts, row.output["worker"]) == ("succeeded", 1, "slow-maintenance")


# -- nothing grows without bound ---------------------------------------------------------------


async def test_gc_removes_expired_sessions_and_nothing_else(app, alice):
    ctx = app.state.ctx
    [user_id] = [uuid.UUID(alice.user["id"])]
    async with ctx.sessions() as db:
        for index in range(3):
            db.add(
                UserSession(
                    user_id=user_id,
                    token_hash=f"{index:064d}",
                    created_at=utcnow() - timedelta(days=30),
                    expires_at=utcnow() - timedelta(days=index + 1),
                )
            )
        await db.commit()
    dry = await collect_garbage(ctx, dry_run=True, sweep=False)
    assert dry.sessions_deleted == 3
    report = await collect_garbage(ctx, sweep=False)
    assert report.sessions_deleted == 3
    async with ctx.sessions() as db:
        assert await db.scalar(select(func.count()).select_from(UserSession)) == 1
    assert (await alice.get("/api/auth/me")).status_code == 200  # the live session stays


async def test_the_login_throttle_keeps_one_window_of_failures(app):
    """10,000 failures under distinct keys: the table holds one window's worth at most, and
    nothing is kept in memory."""
    ctx = app.state.ctx
    limiter = LoginRateLimiter(attempts=10, window_seconds=0.5)
    async with ctx.sessions() as db:
        await db.execute(
            insert(LoginFailure),
            [{"key_hash": f"{i:064x}", "failed_at": utcnow()} for i in range(10_000)],
        )
        await db.commit()
    await asyncio.sleep(0.6)
    async with ctx.sessions() as db:
        await limiter.record_failure(db, "email:late@example.com")
        await db.commit()
        assert await db.scalar(select(func.count()).select_from(LoginFailure)) == 1
    assert not vars(limiter).keys() - {"attempts", "window"}


async def test_the_login_throttle_holds_across_web_processes(app, settings, alice):
    """Two web processes on one database: ten failures spread over both, then both refuse."""
    other = create_app(settings, run_worker=False)
    async with other.router.lifespan_context(other):
        clients = [make_client(app), make_client(other)]
        try:
            body = {"email": "alice@example.com", "password": "wrong password"}
            for attempt in range(10):
                response = await clients[attempt % 2].post("/api/auth/login", json=body)
                assert response.status_code == 401, response.text
            for client in clients:
                refused = await client.post("/api/auth/login", json=body)
                assert refused.status_code == 429
                assert refused.json()["code"] == "rate_limited"
                assert int(refused.headers["Retry-After"]) >= 1
        finally:
            for client in clients:
                await client.aclose()


# -- body limits -------------------------------------------------------------------------------


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class Upload:
    """A 200 MB multipart body made on the fly, counting what the server pulled from it."""

    def __init__(self, total: int = 200 * MB, chunk: int = 256 * 1024) -> None:
        self.total = total
        self.chunk = chunk
        self.sent = 0

    async def __aiter__(self):
        head = (
            b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.png"\r\n'
            b"Content-Type: image/png\r\n\r\n"
        )
        self.sent += len(head)
        yield head
        block = b"\0" * self.chunk
        while self.sent < self.total:
            self.sent += len(block)
            yield block


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
async def test_a_200_mb_upload_is_refused_before_it_is_read(app, alice, declared):
    run = await start_run(alice, flow="quick")
    upload = Upload()
    headers = {"Content-Type": "multipart/form-data; boundary=b"}
    if declared:
        headers["Content-Length"] = str(upload.total)
    rss = _rss_bytes()
    response = await alice.post(
        f"/api/runs/{run['id']}/steps/image/assets", content=upload, headers=headers
    )
    assert response.status_code == 413, response.text
    assert response.json()["code"] == "payload_too_large"
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.headers["connection"] == "close"
    limit = 25 * MB + 64 * 1024
    assert upload.sent <= (0 if declared else limit + MB)
    assert _rss_bytes() - rss < 64 * MB
    assert (await alice.get("/api/auth/me")).status_code == 200  # and it keeps serving


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
async def test_json_over_a_megabyte_is_refused(app, alice, declared):
    run = await start_run(alice, flow="quick")
    body = b'{"prompt": "' + b"x" * (JSON_BODY_LIMIT + 10) + b'"}'

    async def chunks():
        for start in range(0, len(body), 64 * 1024):
            yield body[start : start + 64 * 1024]

    response = await alice.post(
        f"/api/runs/{run['id']}/steps/image/generate",
        content=body if declared else chunks(),
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 413, response.text
    assert response.json()["code"] == "payload_too_large"
    assert response.headers["connection"] == "close"


# -- strict JSON -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/steps/image/generate", b'{"temperature": NaN}'),
        ("/steps/image/generate", b'{"count": 1, "seed": Infinity}'),
    ],
)
async def test_non_finite_numbers_are_refused_at_the_edge(app, alice, path, body):
    run = await start_run(alice, flow="quick")
    response = await alice.post(
        f"/api/runs/{run['id']}{path}", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation_error"


async def test_runs_refuse_non_finite_inputs(app, alice):
    response = await alice.post(
        "/api/flows/quick/runs",
        content=b'{"inputs": {"prompt": NaN}}',
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 422, response.text


async def test_json_columns_refuse_nan(app, alice):
    """The serialiser of JSON columns refuses NaN instead of writing a token PostgreSQL
    rejects (and SQLite would keep as invalid JSON)."""
    from sqlalchemy.exc import StatementError

    run = await start_run(alice, flow="quick")
    [gen] = (await generate(alice, run["id"], "image")).json()["generations"]
    async with app.state.ctx.sessions() as db:
        row = await db.get(Generation, uuid.UUID(gen["id"]))
        row.output = {"score": float("nan")}
        with pytest.raises(StatementError, match="Out of range float values"):
            await db.flush()


# -- no silent loss ----------------------------------------------------------------------------


async def test_a_stalled_subscriber_gets_resync(app):
    bus = app.state.ctx.bus
    run_id = uuid.uuid4()
    with bus.subscribe(run_id) as subscription:
        for index in range(2500):
            bus.publish(Event(kind="generation", data=str(index), run_id=str(run_id)))
        assert subscription.overflowed >= 1
        assert subscription.queue.qsize() <= 1000  # bounded
        # What was dropped is replaced by one `resync`, ahead of what came after it.
        assert await subscription.get(timeout=1) is RESYNC
        rest = [subscription.queue.get_nowait() for _ in range(subscription.queue.qsize())]
    assert rest and all(event is not RESYNC for event in rest)
    assert rest[-1].data == "2499"


async def test_the_event_stream_sends_resync_to_a_slow_page(app, alice, live_server):
    import httpx

    run = await start_run(alice, flow="quick")
    bus = app.state.ctx.bus
    cookies = dict(alice.http.cookies)
    async with (
        httpx.AsyncClient(base_url=live_server, cookies=cookies, timeout=10) as http,
        http.stream("GET", f"/api/runs/{run['id']}/events") as stream,
    ):
        lines = stream.aiter_lines()
        assert (await anext(lines)).startswith(": connected")
        user_id = alice.user["id"]
        for index in range(1500):  # the page reads nothing meanwhile
            bus.publish(
                Event(kind="generation", data=f'{{"n":{index}}}', run_id=run["id"], user_id=user_id)
            )
        received: list[str] = []
        async with asyncio.timeout(10):
            async for line in lines:
                received.append(line)
                if line == "event: resync":
                    break
    assert "event: resync" in received


@pytest.mark.parametrize("storage_kind", ["local", "s3"])
async def test_maintenance_rounds_are_bounded_and_resume(app):
    """A sweep longer than a round: each round stops near its budget, and the next one lists
    on from where the last stopped (it does not start over), until every orphan is gone."""
    from flowstudio.generations.maintenance import PeriodicCollector

    ctx = app.state.ctx
    orphans = []
    for _ in range(6):
        user, run, gen = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        for suffix in (".png", ".png.thumb.webp"):
            key = f"u/{user}/r/{run}/image/{gen}{suffix}"
            await ctx.store.put(key, b"orphan", content_type="image/png")
            orphans.append(key)
    listing = ctx.store.list_prefix
    listed: list[str] = []

    async def slow_listing(prefix, *, start_after=None):
        async for info in listing(prefix, start_after=start_after):
            await asyncio.sleep(0.1)  # a slow bucket
            listed.append(info.key)
            yield info

    ctx.store.list_prefix = slow_listing
    collector = PeriodicCollector(
        ctx, interval=timedelta(0), round_seconds=0.25, orphan_grace=timedelta(0)
    )
    rounds = []
    while True:
        started = asyncio.get_running_loop().time()
        await collector()
        rounds.append(asyncio.get_running_loop().time() - started)
        if collector._resume is None:
            break
        assert len(rounds) < 20, "the sweep never finished"
    assert len(rounds) >= 2  # it did not fit one round, and was cut
    # A round ends after the user it is settling: its budget plus one user's listing.
    assert max(rounds) < 0.25 + 0.2 + 0.5, rounds
    # Resumed, not restarted: each object listed once, but for the one that told a round
    # that its user had ended.
    assert len(listed) <= len(orphans) + len(rounds), listed
    assert [info async for info in listing("u/")] == []


def test_logging_follows_the_current_stream(monkeypatch):
    """One configuration for every command; commands run in-process swap the streams, and a
    handler must not keep writing to one that was closed."""
    import io
    import logging
    import sys

    from flowstudio.ops.logs import configure_logging

    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    configure_logging("INFO")
    try:
        logging.getLogger("flowstudio.test").info("to the first")
        first.close()
        monkeypatch.setattr(sys, "stderr", second)
        logging.getLogger("flowstudio.test").info("to the second")
        assert "INFO    flowstudio.test: to the second" in second.getvalue()
        assert "Logging error" not in second.getvalue()
    finally:
        logging.getLogger("flowstudio").handlers.clear()
        logging.getLogger("flowstudio").propagate = True


async def test_a_providers_nan_is_stored_as_null(app, alice, monkeypatch):
    """What a provider reports goes into a strict JSON column: NaN and infinities become null
    instead of failing the generation."""
    import dataclasses
    import math

    provider = app.state.ctx.providers.get("local")
    original = provider.generate

    async def reporting_nan(request):
        result = await original(request)
        metadata = {"score": math.nan, "scores": [1.5, math.inf], "nested": {"x": -math.inf}}
        return dataclasses.replace(result, metadata=metadata)

    monkeypatch.setattr(provider, "generate", reporting_nan)
    run = await start_run(alice, flow="quick")
    [gen] = (await generate(alice, run["id"], "image")).json()["generations"]
    assert gen["status"] == "succeeded", gen
    stored = (await alice.get(f"/api/history/{gen['id']}")).json()["output"]["provider"]
    assert stored == {"score": None, "scores": [1.5, None], "nested": {"x": None}}
