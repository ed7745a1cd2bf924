"""The history API on both databases (and both stores where bytes are involved)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import httpx
import pytest

from tests.fixtures.flows import (
    adopt,
    generate,
    generate_and_adopt,
    generate_ok,
    sha256,
    start_run,
)


async def history(user, **params) -> dict:
    response = await user.get("/api/history", params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def all_pages(user, limit: int = 3, **params) -> list[dict]:
    items, cursor = [], None
    while True:
        page = await history(user, limit=limit, **({"cursor": cursor} if cursor else {}), **params)
        items.extend(page["items"])
        cursor = page["next_cursor"]
        if not cursor:
            return items


async def test_new_generations_appear_newest_first_with_context(alice):
    run = await start_run(alice, product="a teapot")
    first = await generate_ok(alice, run["id"], "object", count=2)
    [failed] = await generate_ok(alice, run["id"], "object", prompt="teapot [fail:content_blocked]")
    items = (await history(alice))["items"]
    assert [i["id"] for i in items] == [failed["id"], first[1]["id"], first[0]["id"]]
    assert items[0]["status"] == "failed" and items[0]["error"]["code"] == "content_blocked"
    assert items[1]["run_title"] == run["title"]
    assert items[1]["step_title"] == "Object"
    assert items[1]["flow_title"] == "Product shot" and items[1]["flow"] == "product-shot"
    detail = (await alice.get(f"/api/history/{first[0]['id']}")).json()
    assert detail["asset"]["url"] == f"/api/history/{first[0]['id']}/image"
    assert detail["adopted"] is False and detail["prompt"].startswith("Studio product")


async def test_pagination_is_exact_while_rows_are_inserted(alice):
    run = await start_run(alice, "quick", prompt="a fox")
    for _ in range(4):
        await generate(alice, run["id"], "image", count=3, wait=False)
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 4, **({"cursor": cursor} if cursor else {})}
        page = await history(alice, **params)
        seen.extend(i["id"] for i in page["items"])
        # New generations arrive between pages; they are newer than the cursor, so never shown.
        await generate(alice, run["id"], "image", count=1, wait=False)
        pages += 1
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert len(seen) == 12 == len(set(seen))
    assert pages == 3
    assert len((await history(alice, limit=100))["items"]) == 15


async def test_filters_and_search_combine_with_the_cursor(alice):
    shot = await start_run(alice, product="a copper kettle")
    quick = await start_run(alice, "quick", prompt="a kettle on a mountain stove")
    other = await start_run(alice, "quick", prompt="a lighthouse at dusk")
    kettle_objects = await generate_ok(alice, shot["id"], "object", count=3)
    await adopt(alice, shot["id"], "object", kettle_objects[0]["id"])
    await generate_ok(alice, shot["id"], "object", prompt="broken kettle [fail:invalid_request]")
    kettle_quick = await generate_ok(alice, quick["id"], "image", count=2)
    await generate_ok(alice, other["id"], "image", count=2)

    def ids(items):
        return {i["id"] for i in items}

    by_flow = await all_pages(alice, limit=2, flow="product-shot")
    assert len(by_flow) == 4 and {i["flow"] for i in by_flow} == {"product-shot"}
    by_run = await all_pages(alice, limit=1, run_id=quick["id"])
    assert ids(by_run) == ids(kettle_quick)
    by_step = await all_pages(alice, step_id="object")
    assert len(by_step) == 4
    failed = await all_pages(alice, status="failed")
    assert [i["status"] for i in failed] == ["failed"]
    several = await all_pages(alice, limit=2, status="failed,succeeded", flow="product-shot")
    assert len(several) == 4
    searched = await all_pages(alice, limit=2, q="kettle")
    assert len(searched) == 6  # 3 + 1 failed object, 2 quick
    assert ids(await all_pages(alice, limit=1, q="KETT mountain")) == ids(kettle_quick)
    assert ids(await all_pages(alice, q="kettle", flow="quick")) == ids(kettle_quick)
    assert await all_pages(alice, q="kettle", status="failed", flow="product-shot") != []
    assert await all_pages(alice, q="nothing-like-this") == []
    adopted = await all_pages(alice, adopted="true")
    assert ids(adopted) == {kettle_objects[0]["id"]} and adopted[0]["adopted"] is True
    not_adopted = await all_pages(alice, limit=4, adopted="false", flow="product-shot")
    assert len(not_adopted) == 3
    now = datetime.now(UTC)
    assert len(await all_pages(alice, since=(now - timedelta(hours=1)).isoformat())) == 8
    assert await all_pages(alice, until=(now - timedelta(hours=1)).isoformat()) == []
    assert await all_pages(alice, since=(now + timedelta(minutes=5)).isoformat()) == []


@pytest.mark.parametrize(
    "params, code, status",
    [
        ({"cursor": "bm9wZQ"}, "invalid_cursor", 400),
        ({"cursor": "x" * 40}, "invalid_cursor", 400),
        ({"status": "sleeping"}, "validation_error", 422),
        ({"limit": 0}, "validation_error", 422),
        ({"limit": 1000}, "validation_error", 422),
        ({"since": "yesterday"}, "validation_error", 422),
        ({"since": "2026-01-01T00:00:00"}, "validation_error", 422),
        ({"since": "0.0"}, "validation_error", 422),  # not read as Unix time
        ({"until": "1700000000"}, "validation_error", 422),
        ({"run_id": "not-a-uuid"}, "validation_error", 422),
        ({"adopted": "maybe"}, "validation_error", 422),
        ({"q": "!!!"}, "validation_error", 422),
        # PostgreSQL cannot compare text with U+0000: refused on both backends alike.
        ({"flow": "quick\x00"}, "validation_error", 422),
        ({"step_id": "\x00"}, "validation_error", 422),
    ],
)
async def test_bad_parameters_are_problems(alice, params, code, status):
    response = await alice.get("/api/history", params=params)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == code


async def test_cursor_from_another_list_is_refused(alice):
    await start_run(alice, "quick")
    for i in range(3):
        await start_run(alice, "quick", prompt=f"p{i}")
    runs_cursor = (await alice.get("/api/runs?limit=1")).json()["next_cursor"]
    response = await alice.get("/api/history", params={"cursor": runs_cursor})
    assert response.status_code == 400 and response.json()["code"] == "invalid_cursor"


@pytest.mark.parametrize("storage_kind", ["local", "s3"])
async def test_asset_delivery(app, alice, storage_kind):
    run = await start_run(alice)
    [generation] = await generate_ok(alice, run["id"], "object")
    gid = generation["id"]
    original = await app.state.ctx.store.get(generation["asset"]["key"])
    image = await alice.get(f"/api/history/{gid}/image")
    download = await alice.get(f"/api/history/{gid}/download")
    thumb = await alice.get(f"/api/history/{gid}/thumbnail")
    assert download.status_code == 200
    assert download.content == original
    assert download.headers["content-disposition"].startswith("attachment;")
    assert "product-shot-object-" in download.headers["content-disposition"]
    if storage_kind == "local":
        assert image.status_code == 200 and image.content == original
        assert image.headers["content-type"] == "image/png"
        assert image.headers["etag"] == f'"{sha256(original)}"'
        assert "private" in image.headers["cache-control"]
        again = await alice.get(
            f"/api/history/{gid}/image", headers={"If-None-Match": image.headers["etag"]}
        )
        assert again.status_code == 304 and again.content == b""
        assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/webp"
    else:
        for response in (image, thumb):
            assert response.status_code == 302
            location = response.headers["location"]
            assert "X-Amz-Signature" in location and "X-Amz-Expires" in location
        async with httpx.AsyncClient() as outside:
            fetched = await outside.get(image.headers["location"])
        assert fetched.content == original


async def test_assets_need_the_owner(app, alice, bob, client):
    run = await start_run(alice)
    [generation] = await generate_ok(alice, run["id"], "object")
    gid = generation["id"]
    for suffix in ("", "/image", "/thumbnail", "/download"):
        assert (await client.get(f"/api/history/{gid}{suffix}")).status_code == 401
        response = await bob.get(f"/api/history/{gid}{suffix}")
        assert response.status_code == 404 and response.json()["code"] == "not_found"
    assert (await bob.delete(f"/api/history/{gid}")).status_code == 404
    assert (await bob.delete(f"/api/history/{gid}?purge=true")).status_code == 404
    assert (await bob.post(f"/api/history/{gid}/restore")).status_code == 404
    batch = await bob.post("/api/history/delete", json={"ids": [gid]})
    assert batch.json() == {"deleted": [], "not_found": [gid]}
    assert (await history(bob))["items"] == []
    assert (await alice.get(f"/api/history/{gid}")).json()["deleted_at"] is None
    assert (await client.get("/api/history")).status_code == 401


async def test_delete_restore_and_trash(app, alice):
    run = await start_run(alice)
    rid = run["id"]
    obj = await generate_and_adopt(alice, rid, "object")
    await generate_and_adopt(alice, rid, "scene")
    deleted = await alice.delete(f"/api/history/{obj['id']}")
    assert deleted.status_code == 200, deleted.text
    body = deleted.json()
    assert body["purged"] is False
    assert body["invalidated_steps"] == ["object", "scene"]
    deleted_at = datetime.fromisoformat(body["deleted_at"])
    assert datetime.fromisoformat(body["purge_after"]) - deleted_at == timedelta(days=7)
    assert obj["id"] not in {i["id"] for i in (await history(alice))["items"]}
    trash = (await history(alice, deleted="true"))["items"]
    assert [i["id"] for i in trash] == [obj["id"]]
    assert trash[0]["purge_after"] == body["purge_after"]
    run_state = (await alice.get(f"/api/runs/{rid}")).json()
    assert all(s["adopted_generation_id"] is None for s in run_state["steps"])
    # The image stays readable from the trash until it is purged.
    assert (await alice.get(f"/api/history/{obj['id']}/image")).status_code == 200
    restored = await alice.post(f"/api/history/{obj['id']}/restore")
    assert restored.status_code == 200 and restored.json()["deleted_at"] is None
    assert obj["id"] in {i["id"] for i in (await history(alice))["items"]}
    assert (await history(alice, deleted="true"))["items"] == []
    # Restored, it can be adopted again.
    await adopt(alice, rid, "object", obj["id"])


@pytest.mark.parametrize("storage_kind", ["local", "s3"])
async def test_purge_removes_row_and_objects(app, alice):
    run = await start_run(alice)
    [generation] = await generate_ok(alice, run["id"], "object")
    store = app.state.ctx.store
    key = generation["asset"]["key"]
    assert await store.get(key)
    response = await alice.delete(f"/api/history/{generation['id']}?purge=true")
    assert response.status_code == 200 and response.json()["purged"] is True
    assert [i.key async for i in store.list_prefix("")] == []
    assert (await alice.get(f"/api/history/{generation['id']}")).status_code == 404
    assert (await alice.post(f"/api/history/{generation['id']}/restore")).status_code == 404


async def test_batch_delete(alice, bob):
    run = await start_run(alice)
    mine = await generate_ok(alice, run["id"], "object", count=3)
    theirs = await generate_ok(bob, (await start_run(bob))["id"], "object")
    missing = "01a20000-0000-7000-8000-000000000000"
    ids = [mine[0]["id"], mine[1]["id"], theirs[0]["id"], missing, mine[0]["id"]]
    response = await alice.post("/api/history/delete", json={"ids": ids})
    assert response.status_code == 200
    assert response.json() == {
        "deleted": [mine[0]["id"], mine[1]["id"]],
        "not_found": [theirs[0]["id"], missing],
    }
    assert [i["id"] for i in (await history(alice))["items"]] == [mine[2]["id"]]
    assert len((await history(bob))["items"]) == 1
    too_many = await alice.post("/api/history/delete", json={"ids": [missing] * 501})
    assert too_many.status_code == 422
    empty = await alice.post("/api/history/delete", json={"ids": []})
    assert empty.status_code == 422


async def test_deleting_pending_work_cancels_it(app, alice):
    await app.state.worker.stop()
    run = await start_run(alice)
    [pending] = (await generate(alice, run["id"], "object", wait=False)).json()["generations"]
    await alice.delete(f"/api/history/{pending['id']}")
    trash = (await history(alice, deleted="true"))["items"]
    assert trash[0]["status"] == "canceled"


async def test_search_handles_unicode_and_quotes(alice):
    run = await start_run(alice, "quick", prompt='歷史 "quoted" café')
    await generate_ok(alice, run["id"], "image")
    assert len((await history(alice, q="café"))["items"]) == 1
    assert len((await history(alice, q='"quoted'))["items"]) == 1
    assert len((await history(alice, q="歷史"))["items"]) == 1
    assert len((await history(alice, q=quote("a OR b")))["items"]) == 0


async def test_search_pages_through_many_matches_exactly_once(alice, bob, monkeypatch):
    from flowstudio.generations import repository

    # Small index batches make the SQLite search walk several of them per page.
    monkeypatch.setattr(repository, "_FTS_BATCH", 2)
    run = await start_run(alice, "quick", prompt="an otter")
    ok = await generate_ok(alice, run["id"], "image", count=4)
    failed = []
    for _ in range(3):
        failed += await generate_ok(
            alice, run["id"], "image", prompt="otter [fail:invalid_request]"
        )
        await generate_ok(alice, run["id"], "image", count=2)
    theirs = await start_run(bob, "quick", prompt="an otter")
    await generate_ok(bob, theirs["id"], "image", count=3)
    found = await all_pages(alice, limit=2, q="otter", status="failed")
    assert [i["id"] for i in found] == [g["id"] for g in reversed(failed)]
    everything = await all_pages(alice, limit=3, q="otter")
    assert len(everything) == len({i["id"] for i in everything}) == 4 + 3 + 6
    assert {i["run_id"] for i in everything} == {run["id"]}
    assert [i["created_at"] for i in everything] == sorted(
        (i["created_at"] for i in everything), reverse=True
    )
    assert ok[0]["id"] in {i["id"] for i in everything}


def test_history_items_are_complete_and_valid_models():
    """Items are built without validation for speed; validating what was built must give the
    same item back (every field present, every value of the declared type)."""
    from flowstudio.generations.models import Generation
    from flowstudio.generations.schemas import HistoryItem, to_read
    from flowstudio.ids import uuid7

    now = datetime.now(UTC)
    common = dict(
        user_id=uuid7(),
        run_id=uuid7(),
        step_id="image",
        flow_slug="quick",
        batch_id=uuid7(),
        batch_index=0,
        source="generated",
        prompt="an otter",
        params={"size": "64x64"},
        temperature=0.5,
        seed=7,
        provider="local",
        model="m",
        output={"render_ms": 3},
        attempts=1,
        created_at=now,
        updated_at=now,
    )
    succeeded = Generation(
        id=uuid7(),
        status="succeeded",
        object_key="u/x/r/y/image/z.png",
        mime="image/png",
        width=64,
        height=64,
        size_bytes=10,
        sha256="ab" * 32,
        started_at=now,
        finished_at=now,
        **common,
    )
    failed = Generation(
        id=uuid7(), status="failed", error_code="provider_error", error_message="no", **common
    )
    for generation in (succeeded, failed):
        item = to_read(
            generation,
            adopted=True,
            model=HistoryItem,
            run_title="r",
            step_title="s",
            flow_title="f",
            purge_after=None,
        )
        again = HistoryItem.model_validate(item.model_dump())
        assert again.model_dump_json() == item.model_dump_json()
        assert item.model_fields_set == set(HistoryItem.model_fields)
