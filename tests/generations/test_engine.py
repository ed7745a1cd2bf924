"""The generation engine end to end: requests become rows, the worker finishes them."""

from __future__ import annotations

import asyncio
import io
import uuid
from datetime import timedelta

import pytest
from PIL import Image
from sqlalchemy import func, select

from flowstudio.generations import service
from flowstudio.generations.models import Generation
from flowstudio.providers import GenerationResult, LocalProvider, ProviderUnavailable
from tests.fixtures.flows import generate, generate_ok, sha256, start_run, wait_until


async def count_rows(app, **filters) -> int:
    filters = {k: uuid.UUID(v) if k.endswith("_id") else v for k, v in filters.items()}
    async with app.state.ctx.sessions() as db:
        query = select(func.count()).select_from(Generation).filter_by(**filters)
        return await db.scalar(query)


@pytest.mark.parametrize("storage_kind", ["local", "s3"])
@pytest.mark.parametrize("count", [1, 3])
async def test_generate_persists_rows_and_objects(app, alice, count):
    run = await start_run(alice)
    generations = await generate_ok(alice, run["id"], "object", count=count)
    assert len(generations) == count
    assert await count_rows(app, run_id=run["id"]) == count
    assert len({g["batch_id"] for g in generations}) == 1
    assert [g["batch_index"] for g in generations] == list(range(count))
    store = app.state.ctx.store
    for generation in generations:
        assert generation["status"] == "succeeded", generation
        asset = generation["asset"]
        data = await store.get(asset["key"])
        assert asset["key"] == (f"u/{alice.user['id']}/r/{run['id']}/object/{generation['id']}.png")
        assert sha256(data) == asset["sha256"]
        assert len(data) == asset["size_bytes"]
        with Image.open(io.BytesIO(data)) as image:
            assert image.size == (asset["width"], asset["height"]) == (1024, 1024)
        thumb = await store.get(asset["key"] + ".thumb.webp")
        with Image.open(io.BytesIO(thumb)) as image:
            assert image.format == "WEBP" and max(image.size) <= 384
        assert generation["provider"] == "local" and generation["model"] == "local-sketch"
        assert generation["provider_request_id"].startswith("local-")
        assert generation["started_at"] and generation["finished_at"]
    # Different candidates of one batch are different images.
    assert len({g["asset"]["sha256"] for g in generations}) == count


async def test_pending_rows_exist_before_the_worker_runs(app, alice):
    await app.state.worker.stop()
    run = await start_run(alice)
    response = await generate(alice, run["id"], "object", wait=False, count=3, expect=202)
    generations = response.json()["generations"]
    assert [g["status"] for g in generations] == ["pending"] * 3
    listed = (await alice.get(f"/api/runs/{run['id']}/steps/object/assets")).json()
    assert {g["id"] for g in listed["items"]} == {g["id"] for g in generations}
    assert all(g["asset"] is None for g in listed["items"])


async def test_provider_failure_is_recorded_and_listed(app, alice):
    run = await start_run(alice)
    [failed] = await generate_ok(alice, run["id"], "object", prompt="a mug [fail:content_blocked]")
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "content_blocked"
    assert failed["error"]["message"]
    assert failed["asset"] is None
    listed = (await alice.get(f"/api/runs/{run['id']}/steps/object/assets?status=failed")).json()
    assert [g["id"] for g in listed["items"]] == [failed["id"]]
    keys = [info.key async for info in app.state.ctx.store.list_prefix("")]
    assert keys == []


class FlakyProvider(LocalProvider):
    """Fails with a retryable error a set number of times, then draws like `local`."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.calls = 0

    async def generate(self, request) -> GenerationResult:
        self.calls += 1
        if self.calls <= self.failures:
            raise ProviderUnavailable("temporarily down", retry_after=0.05)
        return await super().generate(request)


@pytest.mark.parametrize("settings_overrides", [{"max_attempts": 3}])
async def test_retry_then_success(app, alice):
    flaky = FlakyProvider(failures=2)
    app.state.ctx.providers.register(flaky, replace=True)
    run = await start_run(alice)
    [generation] = await generate_ok(alice, run["id"], "object")
    assert generation["status"] == "succeeded"
    assert generation["attempts"] == 3
    assert generation["error"] is None
    assert flaky.calls == 3


@pytest.mark.parametrize("settings_overrides", [{"max_attempts": 2}])
async def test_retries_run_out(app, alice):
    app.state.ctx.providers.register(FlakyProvider(failures=5), replace=True)
    run = await start_run(alice)
    [generation] = await generate_ok(alice, run["id"], "object")
    assert generation["status"] == "failed"
    assert generation["error"]["code"] == "provider_unavailable"
    assert generation["attempts"] == 2


async def test_idempotency_key_returns_the_same_generations(app, alice):
    run = await start_run(alice)
    headers = {"Idempotency-Key": "retry-me-1"}
    first = await generate(alice, run["id"], "object", count=3, wait=False, headers=headers)
    second = await generate(alice, run["id"], "object", count=3, wait=False, headers=headers)
    assert first.status_code == second.status_code == 202
    assert [g["id"] for g in first.json()["generations"]] == [
        g["id"] for g in second.json()["generations"]
    ]
    assert await count_rows(app, run_id=run["id"]) == 3
    # Concurrent retries with a fresh key also produce one batch.
    headers = {"Idempotency-Key": "retry-me-2"}
    answers = await asyncio.gather(
        *[generate(alice, run["id"], "object", wait=False, headers=headers) for _ in range(4)]
    )
    assert {r.status_code for r in answers} == {202}
    assert len({r.json()["generations"][0]["id"] for r in answers}) == 1
    assert await count_rows(app, run_id=run["id"]) == 4
    # The same key for another step is a conflict, not a silent reuse.
    other = await generate(alice, run["id"], "scene", wait=False, headers=headers)
    assert other.status_code == 409 and other.json()["code"] == "idempotency_key_reused"


async def test_expired_lease_is_recovered(app, alice):
    ctx = app.state.ctx
    await app.state.worker.stop()
    run = await start_run(alice)
    [pending] = (await generate(alice, run["id"], "object", wait=False)).json()["generations"]
    # A worker claims the row and then dies: its lease runs out.
    async with ctx.sessions() as db:
        claimed = await service.claim(
            db, bus=ctx.bus, owner="dead-worker", limit=10, per_user=10, lease=timedelta(seconds=-1)
        )
        await db.commit()
    assert [g.id.hex for g in claimed] == [pending["id"].replace("-", "")]
    async with ctx.sessions() as db:
        recovered = await service.recover_expired_leases(db, bus=ctx.bus, max_attempts=3)
        await db.commit()
    assert [g.status for g in recovered] == ["pending"]
    # The dead worker can no longer finish it.
    async with ctx.sessions() as db:
        late = await service.finish_succeeded(
            db, bus=ctx.bus, generation_id=claimed[0].id, owner="dead-worker", values={}
        )
        await db.commit()
    assert late is None
    from flowstudio.generations.worker import Worker

    worker = Worker(ctx, ctx.bus)
    await worker.start()
    try:

        async def done():
            r = await alice.get(f"/api/runs/{run['id']}/steps/object/assets")
            return r.json()["items"][0]["status"] == "succeeded"

        await wait_until(done)
    finally:
        await worker.stop()
    assert (await alice.get(f"/api/runs/{run['id']}/steps/object/assets")).json()["items"][0][
        "attempts"
    ] == 2


async def test_lease_expiry_after_max_attempts_fails_worker_lost(app, alice):
    ctx = app.state.ctx
    await app.state.worker.stop()
    run = await start_run(alice)
    await generate(alice, run["id"], "object", wait=False)
    async with ctx.sessions() as db:
        await service.claim(
            db, bus=ctx.bus, owner="dead", limit=1, per_user=5, lease=timedelta(seconds=-1)
        )
        await db.commit()
    async with ctx.sessions() as db:
        [row] = await service.recover_expired_leases(db, bus=ctx.bus, max_attempts=1)
        await db.commit()
    assert row.status == "failed" and row.error_code == "worker_lost"


async def test_concurrent_claimers_never_share_a_row(app, alice):
    ctx = app.state.ctx
    await app.state.worker.stop()
    run = await start_run(alice)
    for _ in range(10):
        await generate(alice, run["id"], "object", count=4, wait=False)

    async def claimer(name: str) -> list:
        mine = []
        while True:
            async with ctx.sessions() as db:
                rows = await service.claim(
                    db, bus=ctx.bus, owner=name, limit=3, per_user=1000, lease=timedelta(minutes=5)
                )
                await db.commit()
            if not rows:
                return mine
            mine.extend(g.id for g in rows)
            await asyncio.sleep(0)

    results = await asyncio.gather(*[claimer(f"w{i}") for i in range(4)])
    claimed = [gid for result in results for gid in result]
    assert len(claimed) == 40
    assert len(set(claimed)) == 40
    async with ctx.sessions() as db:
        owners = dict((await db.execute(select(Generation.id, Generation.lease_owner))).all())
    for index, result in enumerate(results):
        assert all(owners[gid] == f"w{index}" for gid in result)


async def test_per_user_concurrency_cap(app, alice, bob):
    ctx = app.state.ctx
    await app.state.worker.stop()
    run_a = await start_run(alice)
    run_b = await start_run(bob)
    await generate(alice, run_a["id"], "object", count=4, wait=False)
    await generate(bob, run_b["id"], "object", count=1, wait=False)
    async with ctx.sessions() as db:
        rows = await service.claim(
            db, bus=ctx.bus, owner="w", limit=10, per_user=2, lease=timedelta(minutes=5)
        )
        await db.commit()
    by_user = {}
    for row in rows:
        by_user[row.user_id] = by_user.get(row.user_id, 0) + 1
    assert sorted(by_user.values()) == [1, 2]
    async with ctx.sessions() as db:
        again = await service.claim(
            db, bus=ctx.bus, owner="w", limit=10, per_user=2, lease=timedelta(minutes=5)
        )
        await db.commit()
    assert again == []


async def test_storage_failure_fails_the_row_and_leaves_nothing(app, alice):
    ctx = app.state.ctx
    from flowstudio.storage import StorageError

    original_put = ctx.store.put
    calls = []

    async def failing_put(key, data, *, content_type):
        calls.append(key)
        if key.endswith(".thumb.webp"):
            raise StorageError("disk full")
        return await original_put(key, data, content_type=content_type)

    ctx.store.put = failing_put
    try:
        run = await start_run(alice)
        [generation] = await generate_ok(alice, run["id"], "object")
    finally:
        ctx.store.put = original_put
    assert generation["status"] == "failed"
    assert generation["error"]["code"] == "storage_error"
    assert calls
    assert [info.key async for info in ctx.store.list_prefix("")] == []


async def test_graceful_shutdown_releases_unfinished_work(app, alice):
    run = await start_run(alice)
    [generation] = (
        await generate(alice, run["id"], "object", wait=False, prompt="slow one [slow:30]")
    ).json()["generations"]

    async def running():
        r = await alice.get(f"/api/runs/{run['id']}/steps/object/assets")
        return r.json()["items"][0]["status"] == "running"

    await wait_until(running)
    await app.state.worker.stop(grace_seconds=0.1)
    item = (await alice.get(f"/api/runs/{run['id']}/steps/object/assets")).json()["items"][0]
    assert item["status"] == "pending"
    assert item["attempts"] == 0
