"""flowstudio gc (trash purge, retention, orphans, missing objects) and export."""

from __future__ import annotations

import json
import uuid
import zipfile
from datetime import timedelta

import pytest
from sqlalchemy import update
from typer.testing import CliRunner

from flowstudio.db import utcnow
from flowstudio.generations import repository
from flowstudio.generations.maintenance import collect_garbage
from flowstudio.generations.models import Generation
from tests.fixtures.flows import adopt, generate_and_adopt, generate_ok, start_run


async def keys(store) -> set[str]:
    return {info.key async for info in store.list_prefix("")}


async def age_trash(app, generation_id: str, days: int) -> None:
    async with app.state.ctx.sessions() as db:
        await db.execute(
            update(Generation)
            .where(Generation.id == uuid.UUID(generation_id))
            .values(deleted_at=utcnow() - timedelta(days=days))
        )
        await db.commit()


@pytest.mark.parametrize("storage_kind", ["local", "s3"])
async def test_gc_purges_expired_trash_and_orphans_only(app, alice):
    ctx = app.state.ctx
    run = await start_run(alice)
    rid = run["id"]
    adopted = await generate_and_adopt(alice, rid, "object")
    old_trash, fresh_trash, kept = await generate_ok(alice, rid, "object", count=3)
    for generation in (old_trash, fresh_trash):
        assert (await alice.delete(f"/api/history/{generation['id']}")).status_code == 200
    await age_trash(app, old_trash["id"], days=8)
    orphan = f"u/{alice.user['id']}/r/{rid}/object/{uuid.uuid4()}.png"
    await ctx.store.put(orphan, b"stray", content_type="image/png")
    # A row whose image vanished is reported, not changed.
    await ctx.store.delete_many([kept["asset"]["key"]])
    before = await keys(ctx.store)

    dry = await collect_garbage(ctx, dry_run=True, orphan_grace=timedelta(0))
    assert dry.trash_purged == 1
    assert dry.orphan_keys == [orphan]
    assert await keys(ctx.store) == before
    assert (await alice.get(f"/api/history/{old_trash['id']}")).status_code == 200

    report = await collect_garbage(ctx, orphan_grace=timedelta(0))
    assert report.trash_purged == 1 and report.orphans_deleted == 1
    assert [str(g) for g in report.missing_objects] == [kept["id"]]
    after = await keys(ctx.store)
    assert before - after == {
        orphan,
        old_trash["asset"]["key"],
        old_trash["asset"]["key"] + ".thumb.webp",
    }
    assert (await alice.get(f"/api/history/{old_trash['id']}")).status_code == 404
    assert (await alice.get(f"/api/history/{fresh_trash['id']}")).json()["deleted_at"]
    assert adopted["asset"]["key"] in after
    # Fresh orphans (a job may be writing them right now) are left alone.
    await ctx.store.put(orphan, b"stray", content_type="image/png")
    grace = await collect_garbage(ctx)
    assert grace.orphans_deleted == 0 and orphan in await keys(ctx.store)


@pytest.mark.parametrize("settings_overrides", [{"keep_last_per_step": 2}])
async def test_retention_never_touches_adopted_or_pending(app, alice):
    ctx = app.state.ctx
    run = await start_run(alice)
    rid = run["id"]
    oldest = await generate_and_adopt(alice, rid, "object")
    newer = await generate_ok(alice, rid, "object", count=4)
    report = await collect_garbage(ctx, sweep=False)
    assert report.retention_trashed == 2
    live = (await alice.get("/api/history", params={"limit": 100})).json()["items"]
    assert {g["id"] for g in live} == {oldest["id"], newer[2]["id"], newer[3]["id"]}
    # Once no longer adopted, the oldest counts like any other candidate.
    await adopt(alice, rid, "object", newer[3]["id"])
    await generate_ok(alice, rid, "object")
    assert (await collect_garbage(ctx, sweep=False)).retention_trashed == 1
    trash = (await alice.get("/api/history", params={"deleted": "true"})).json()["items"]
    assert oldest["id"] in {g["id"] for g in trash}
    assert newer[3]["id"] not in {g["id"] for g in trash}


@pytest.mark.parametrize("settings_overrides", [{"max_age_days": 30}])
async def test_max_age_retention(app, alice):
    ctx = app.state.ctx
    run = await start_run(alice)
    adopted = await generate_and_adopt(alice, run["id"], "object")
    [old, new] = await generate_ok(alice, run["id"], "object", count=2)
    async with ctx.sessions() as db:
        await db.execute(
            update(Generation)
            .where(Generation.id.in_([uuid.UUID(old["id"]), uuid.UUID(adopted["id"])]))
            .values(created_at=utcnow() - timedelta(days=40))
        )
        await db.commit()
    report = await collect_garbage(ctx, sweep=False)
    assert report.retention_trashed == 1
    trash = (await alice.get("/api/history", params={"deleted": "true"})).json()["items"]
    assert [g["id"] for g in trash] == [old["id"]]


async def test_export_writes_images_and_metadata(app, alice, tmp_path):
    from flowstudio.generations.export import export_history

    run = await start_run(alice)
    generations = await generate_ok(alice, run["id"], "object", count=2)
    await generate_ok(alice, run["id"], "object", prompt="x [fail:content_blocked]")
    other = await start_run(alice, "quick")
    await generate_ok(alice, other["id"], "image")
    output = tmp_path / "export.zip"
    summary = await export_history(
        app.state.ctx, email="alice@example.com", output=output, run_id=uuid.UUID(run["id"])
    )
    assert summary.generations == 3 and summary.images == 2
    with zipfile.ZipFile(output) as archive:
        metadata = json.loads(archive.read("metadata.json"))
        assert len(metadata["generations"]) == 3
        for item in metadata["generations"]:
            if item["status"] == "succeeded":
                data = archive.read(item["file"])
                assert data == await app.state.ctx.store.get(item["asset"]["key"])
        assert {g["id"] for g in generations} <= {g["id"] for g in metadata["generations"]}
    everything = await export_history(
        app.state.ctx, email="alice@example.com", output=tmp_path / "all.zip"
    )
    assert everything.generations == 4


def test_cli_gc_and_export(tmp_path, monkeypatch):
    from flowstudio.cli import app as cli

    monkeypatch.setenv("FLOWSTUDIO_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("FLOWSTUDIO_ARGON2_TIME_COST", "1")
    monkeypatch.setenv("FLOWSTUDIO_ARGON2_MEMORY_COST", "1024")
    runner = CliRunner()
    created = runner.invoke(
        cli, ["user", "create", "--email", "cli@example.com", "--password", "long enough password"]
    )
    assert created.exit_code == 0, created.output
    again = runner.invoke(
        cli, ["user", "create", "--email", "cli@example.com", "--password", "long enough password"]
    )
    assert again.exit_code == 1 and "already" in again.output
    result = runner.invoke(cli, ["gc", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "dry run" in result.output
    exported = runner.invoke(
        cli, ["export", "--user", "cli@example.com", "-o", str(tmp_path / "e.zip")]
    )
    assert exported.exit_code == 0, exported.output
    assert zipfile.is_zipfile(tmp_path / "e.zip")
    missing = runner.invoke(cli, ["export", "--user", "nobody@example.com"])
    assert missing.exit_code == 1


async def test_deleted_run_is_purged_after_its_trash_period(app, alice):
    from flowstudio.runs.models import Run

    ctx = app.state.ctx
    run = await start_run(alice)
    [generation] = await generate_ok(alice, run["id"], "object")
    assert (await alice.delete(f"/api/runs/{run['id']}")).status_code == 200
    assert (await collect_garbage(ctx, sweep=False)).runs_purged == 0
    async with ctx.sessions() as db:
        past = utcnow() - timedelta(days=8)
        await db.execute(update(Run).values(deleted_at=past))
        await db.execute(update(Generation).values(deleted_at=past))
        await db.commit()
    report = await collect_garbage(ctx, sweep=False)
    assert report.trash_purged == 1 and report.runs_purged == 1
    assert await keys(ctx.store) == set()
    assert (await alice.get(f"/api/history/{generation['id']}")).status_code == 404


async def search_index_segments(app) -> int:
    async with app.state.ctx.sessions() as db:
        return await db.run_sync(lambda s: repository.search_index_segments(s.connection()))


async def test_gc_merges_the_search_index_on_sqlite(app, alice, backend):
    """Each write adds a segment to FTS5's index, and a search seeks into every one; gc
    merges them into one, in short steps, and every search finds what it found before.
    PostgreSQL's GIN index has nothing to merge."""
    sqlite = backend == "sqlite"
    ctx = app.state.ctx
    run = await start_run(alice, "quick", prompt="index")
    words = ["kettle", "kestrel", "lantern", "lanterns", "compass", "copper"]
    for i, word in enumerate(words * 2):
        await generate_ok(alice, run["id"], "image", prompt=f"a {word} number {i}")
    segments = await search_index_segments(app) if sqlite else None
    assert not sqlite or segments > 1

    async def found(q: str) -> list[str]:
        response = await alice.get("/api/history", params={"q": q, "limit": 3})
        ids = []
        while True:
            assert response.status_code == 200, response.text
            page = response.json()
            ids += [item["id"] for item in page["items"]]
            if not page["next_cursor"]:
                return ids
            response = await alice.get(
                "/api/history", params={"q": q, "limit": 3, "cursor": page["next_cursor"]}
            )

    queries = ["ke", "kettle", "lantern", "co", "number", "a"]
    before = {q: await found(q) for q in queries}
    assert all(before.values())

    dry = await collect_garbage(ctx, dry_run=True)
    assert dry.search_index_merges == 0
    assert not sqlite or await search_index_segments(app) == segments
    report = await collect_garbage(ctx)
    assert (report.search_index_merges >= 1) is sqlite
    assert not sqlite or await search_index_segments(app) == 1
    assert {q: await found(q) for q in queries} == before
    # Nothing left to merge: the next run does no steps.
    assert (await collect_garbage(ctx)).search_index_merges == 0
