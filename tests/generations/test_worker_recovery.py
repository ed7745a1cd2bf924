"""A worker that died after storing an image but before finishing the row."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from flowstudio.generations import repository, service
from flowstudio.generations.worker import Worker
from flowstudio.storage.keys import generation_object_key, thumbnail_key
from tests.fixtures.flows import generate, start_run, wait_until


@pytest.fixture
def settings_overrides() -> dict:
    return {"max_attempts": 1}


@pytest.mark.parametrize("storage_kind", ["local", "s3"])
async def test_lost_generation_leaves_no_objects_behind(app, alice, monkeypatch):
    ctx = app.state.ctx
    await app.state.worker.stop()
    run = await start_run(alice)
    [pending] = (await generate(alice, run["id"], "object", wait=False)).json()["generations"]
    # A worker claims the row, writes the image and thumbnail, and is killed before it can
    # finish the row; its lease runs out with no attempts left.
    async with ctx.sessions() as db:
        [claimed] = await service.claim(
            db, bus=ctx.bus, owner="killed", limit=1, per_user=5, lease=timedelta(seconds=-1)
        )
        await db.commit()
    key = generation_object_key(
        user_id=claimed.user_id,
        run_id=claimed.run_id,
        step_id=claimed.step_id,
        generation_id=claimed.id,
        ext="png",
    )
    await ctx.store.put(key, b"image bytes", content_type="image/png")
    await ctx.store.put(thumbnail_key(key), b"thumbnail bytes", content_type="image/webp")

    # The objects go before the failure is committed: a recovering worker killed in between
    # leaves the row expired for the next one, never a failed row with objects left behind.
    statuses_at_delete: list[str] = []
    delete_many = ctx.store.delete_many

    async def delete_and_look(keys):  # noqa: ANN001, ANN202
        async with ctx.read_sessions() as db:
            [row] = await repository.get_by_ids(db, [uuid.UUID(pending["id"])])
            statuses_at_delete.append(row.status)
        return await delete_many(keys)

    monkeypatch.setattr(ctx.store, "delete_many", delete_and_look)
    survivor = Worker(ctx, ctx.bus, name="survivor")
    await survivor.start()
    try:

        async def objects_gone() -> bool:
            async with ctx.sessions() as db:
                [row] = await repository.get_by_ids(db, [uuid.UUID(pending["id"])])
            keys = [info.key async for info in ctx.store.list_prefix("u/")]
            return row.status == "failed" and not keys

        await wait_until(objects_gone, timeout=20)
    finally:
        await survivor.stop()
    async with ctx.sessions() as db:
        [row] = await repository.get_by_ids(db, [uuid.UUID(pending["id"])])
    assert row.error_code == "worker_lost"
    assert row.object_key is None
    assert statuses_at_delete == ["running"]


async def test_a_lost_job_is_cancelled_once_so_its_clean_up_runs_to_the_end(app):
    """The heartbeat finds a job's row gone (purged) and cancels the job; the job then cleans
    up (deletes what it wrote), which can take longer than a heartbeat. Later heartbeats must
    not cancel it again: that would cut the clean-up short and leave objects behind."""
    import asyncio

    worker = app.state.worker
    cancels = 0
    cleaned_up = asyncio.Event()

    async def job() -> None:
        nonlocal cancels
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancels += 1
            try:
                await asyncio.sleep(0.3)  # the clean-up: store deletes, a database round trip
                cleaned_up.set()
            except asyncio.CancelledError:
                cancels += 1
                raise
            raise

    lost = uuid.uuid4()  # no such row: its lease cannot be extended
    task = asyncio.create_task(job())
    worker._jobs[lost] = task
    try:
        await asyncio.sleep(0)
        for _ in range(3):
            await worker._heartbeat()
            await asyncio.sleep(0.05)
        await asyncio.wait_for(cleaned_up.wait(), 5)
    finally:
        worker._jobs.pop(lost, None)
        task.cancel()
    assert cancels == 1
