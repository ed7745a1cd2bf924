"""Purge means gone: a generation purged (or its run deleted and purged) at any moment of its
making leaves no object that no row references, listed straight from the store with no grace;
keys the store refuses to delete are recorded and the next gc deletes them."""

from __future__ import annotations

import asyncio
import logging
import random
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from flowstudio.generations.maintenance import collect_garbage
from flowstudio.generations.models import Generation, ObjectDeletion
from flowstudio.storage.keys import thumbnail_key
from tests.fixtures.flows import generate, start_run, wait_until

TINY_FLOW = """\
slug = "tiny"
title = "Tiny"
description = "One small image."

[[steps]]
id = "image"
title = "Image"
kind = "generate"
prompt = "a small test image"
size = "96x96"
"""

pytestmark = pytest.mark.parametrize("storage_kind", ["local", "s3"])


@pytest.fixture
def settings_overrides(tmp_path: Path) -> dict[str, Any]:
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "tiny.toml").write_text(TINY_FLOW)
    return {"flows_dir": flows, "worker_concurrency": 16, "per_user_concurrency": 16}


async def unreferenced_objects(app: Any) -> list[str]:
    """Every object in the store that no row references (no grace: listed as it is now)."""
    ctx = app.state.ctx
    keys = [info.key async for info in ctx.store.list_prefix("")]
    async with ctx.sessions() as db:
        rows = (await db.execute(select(Generation.object_key, Generation.thumbnail_key))).all()
    referenced = {key for row in rows for key in row if key}
    return sorted(set(keys) - referenced)


async def unfinished(app: Any) -> int:
    async with app.state.ctx.sessions() as db:
        return await db.scalar(
            select(func.count())
            .select_from(Generation)
            .where(Generation.status.in_(["pending", "running"]))
        )


async def settle(app: Any) -> None:
    async def idle() -> bool:
        return await unfinished(app) == 0 and not app.state.worker._jobs

    await wait_until(idle, timeout=60)


async def test_purged_at_any_moment_leaves_nothing(app, alice):
    """200 generations with a slow provider, each purged at a random moment: before it is
    claimed, while the provider works, around the object writes, or after it succeeded."""
    rng = random.Random(20261206)
    run = await start_run(alice, flow="tiny")
    ids: list[str] = []
    for _ in range(50):
        prompt = f"race [slow:{rng.uniform(0, 0.4):.2f}]"
        response = await generate(alice, run["id"], "image", wait=False, count=4, prompt=prompt)
        assert response.status_code == 202, response.text
        ids.extend(g["id"] for g in response.json()["generations"])

    async def purge_later(generation_id: str) -> None:
        await asyncio.sleep(rng.uniform(0, 1.2))
        response = await alice.delete(f"/api/history/{generation_id}?purge=true")
        assert response.status_code == 200, response.text
        assert response.json()["purged"] is True

    await asyncio.gather(*[purge_later(g) for g in ids])
    await settle(app)
    assert await unreferenced_objects(app) == []
    assert (await alice.get("/api/history")).json()["items"] == []


async def test_purged_just_after_its_objects_are_written(app, alice, caplog):
    """The worst moment: the image and thumbnail are stored, the row is not finished yet."""
    ctx = app.state.ctx
    original_put = ctx.store.put
    purged: list[str] = []

    async def put_then_purge(key: str, data: bytes, *, content_type: str) -> None:
        await original_put(key, data, content_type=content_type)
        if key.endswith(".thumb.webp"):
            generation_id = key.rsplit("/", 1)[-1].split(".")[0]
            response = await alice.delete(f"/api/history/{generation_id}?purge=true")
            assert response.status_code == 200, response.text
            purged.append(generation_id)

    ctx.store.put = put_then_purge
    run = await start_run(alice, flow="tiny")
    with caplog.at_level(logging.WARNING, logger="flowstudio.worker"):
        await generate(alice, run["id"], "image", wait=False, count=3)
        await wait_until(lambda: _true(len(purged) == 3))
        await settle(app)
    assert await unreferenced_objects(app) == []
    assert sum("purged while running" in r.getMessage() for r in caplog.records) == 3
    assert not any("taken over" in r.getMessage() for r in caplog.records)


async def test_a_deleted_run_purged_while_running_leaves_nothing(app, alice):
    run = await start_run(alice, flow="tiny")
    await generate(alice, run["id"], "image", wait=False, count=4, prompt="run [slow:0.6]")

    async def running() -> bool:
        async with app.state.ctx.sessions() as db:
            statuses = await db.scalars(select(Generation.status))
            return set(statuses) == {"running"}

    await wait_until(running)
    assert (await alice.delete(f"/api/runs/{run['id']}")).status_code in (200, 204)
    app.state.ctx.settings.trash_days = 0
    report = await collect_garbage(app.state.ctx, sweep=False)
    assert report.trash_purged == 4
    await settle(app)
    assert await unreferenced_objects(app) == []


async def test_a_refused_delete_is_recorded_and_gc_finishes_it(app, alice):
    """The store refuses the first delete (S3 down): the row is purged anyway, its keys are
    recorded, and the next gc deletes them without the orphan sweep's hour of grace."""
    ctx = app.state.ctx
    run = await start_run(alice, flow="tiny")
    response = await generate(alice, run["id"], "image", count=2)
    [first, second] = response.json()["generations"]
    assert first["status"] == second["status"] == "succeeded"
    original_delete = ctx.store.delete_many
    refusals = 0

    async def refuse_first(keys):
        nonlocal refusals
        if refusals == 0:
            refusals += 1
            return list(keys)
        return await original_delete(keys)

    ctx.store.delete_many = refuse_first
    assert (await alice.delete(f"/api/history/{first['id']}?purge=true")).json()["purged"]
    assert (await alice.get(f"/api/history/{first['id']}")).status_code == 404
    leftover = await unreferenced_objects(app)
    key = first["asset"]["key"]
    assert leftover == sorted([key, thumbnail_key(key)])
    async with ctx.sessions() as db:
        assert sorted(await db.scalars(select(ObjectDeletion.key))) == leftover
    dry = await collect_garbage(ctx, dry_run=True, sweep=False)
    assert dry.recorded_deleted == 2
    assert await unreferenced_objects(app) == leftover
    report = await collect_garbage(ctx, sweep=False, orphan_grace=timedelta(hours=1))
    assert report.recorded_deleted == 2
    assert await unreferenced_objects(app) == []
    async with ctx.sessions() as db:
        assert list(await db.scalars(select(ObjectDeletion.key))) == []
    # The other generation is untouched.
    assert (await alice.get(f"/api/history/{second['id']}")).status_code == 200


async def _true(value: bool) -> bool:
    return value
