"""List pages are written straight from database rows; they must say exactly what the typed
detail view (HistoryItem through pydantic) says, for every kind of generation, on both databases."""

from __future__ import annotations

import io
import json
import uuid
from datetime import UTC, datetime, timedelta

import pydantic_core
import pytest
from PIL import Image
from sqlalchemy import text, update

from flowstudio.generations import history, history_json, repository
from flowstudio.generations.history_json import SQLiteValues
from flowstudio.generations.models import Generation
from flowstudio.generations.repository import HistoryFilters
from flowstudio.generations.schemas import HistoryList
from tests.fixtures.flows import adopt, generate_ok, png_bytes, start_run


async def _same_as_detail(user, **params) -> list[dict]:
    response = await user.get("/api/history", params={"limit": 100, **params})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    items = response.json()["items"]
    for item in items:
        detail = await user.get(f"/api/history/{item['id']}")
        assert detail.status_code == 200, detail.text
        assert item == detail.json()
    return items


async def test_list_items_equal_the_typed_detail(app, alice):
    run = await start_run(alice, product="a brass compass")
    ok = await generate_ok(alice, run["id"], "object", count=3, temperature=0.35, seed=12)
    await adopt(alice, run["id"], "object", ok[1]["id"])
    await generate_ok(alice, run["id"], "object", prompt="compass [fail:content_blocked]")
    await generate_ok(alice, run["id"], "scene", count=1)
    upload = await alice.post(
        f"/api/runs/{run['id']}/steps/object/assets",
        files={"file": ("compass.png", png_bytes((30, 60, 90)), "image/png")},
    )
    assert upload.status_code in (200, 201), upload.text
    quick = await start_run(alice, "quick", prompt='a café façade — naïve «quotes» "and" \\')
    await generate_ok(alice, quick["id"], "image", count=1)
    await alice.delete(f"/api/history/{ok[2]['id']}")

    items = await _same_as_detail(alice)
    kinds = {(i["status"], i["source"], i["adopted"], i["error"] is not None) for i in items}
    assert ("succeeded", "generated", True, False) in kinds
    assert ("failed", "generated", False, True) in kinds
    assert ("succeeded", "upload", False, False) in kinds
    trash = await _same_as_detail(alice, deleted="true")
    assert [i["id"] for i in trash] == [ok[2]["id"]] and trash[0]["purge_after"]


@pytest.mark.parametrize(
    "stored",
    [
        "2026-01-31 23:59:59.000000",
        "2026-01-31 23:59:59.000450",
        "2026-01-31 23:59:59.123456",
        "2026-01-31T23:59:59",  # not how rows are written, but readable all the same
        "2026-01-31 23:59:59.5",
    ],
)
def test_sqlite_times_are_written_as_pydantic_writes_them(stored):
    parsed = datetime.fromisoformat(stored).replace(tzinfo=UTC)
    expected = pydantic_core.to_json(parsed).decode().strip('"')
    assert SQLiteValues().text_time(stored) == expected


def test_sqlite_ids_are_written_as_uuids():
    from flowstudio.ids import uuid7

    value = uuid7()
    assert SQLiteValues().text_id(value.hex) == str(value)
    assert SQLiteValues().uuid(value.hex) == value


async def test_times_read_as_text_are_written_as_pydantic_writes_them(app, alice):
    """The list query reads times as text (PostgreSQL formats them in SQL): whole seconds,
    a few microseconds and another zone must come out as the typed detail view has them."""
    run = await start_run(alice, "quick", prompt="times")
    made = await generate_ok(alice, run["id"], "image", count=3)
    times = [
        datetime(2026, 1, 31, 23, 59, 59, tzinfo=UTC),
        datetime(2026, 1, 31, 23, 59, 59, 450, tzinfo=UTC),
        datetime.fromisoformat("2026-02-01T01:59:59.123456+02:00"),
    ]
    async with app.state.ctx.sessions() as db:
        for generation, moment in zip(made, times, strict=True):
            await db.execute(
                update(Generation)
                .where(Generation.id == uuid.UUID(generation["id"]))
                .values(finished_at=moment, started_at=moment)
            )
        await db.commit()
    items = await _same_as_detail(alice, run_id=run["id"])
    written = {item["finished_at"] for item in items}
    assert written == {
        "2026-01-31T23:59:59Z",
        "2026-01-31T23:59:59.000450Z",
        "2026-01-31T23:59:59.123456Z",
    }


async def _store_output(app, generation_id: str, document: str, backend: str) -> None:
    """Write a generation's output JSON as raw text, as a provider or an older release may
    have left it."""
    cast = "CAST(:doc AS jsonb)" if backend == "postgres" else ":doc"
    key = generation_id if backend == "postgres" else generation_id.replace("-", "")
    async with app.state.ctx.sessions() as db:
        await db.execute(
            text(f"UPDATE generations SET output = {cast} WHERE id = :id"),
            {"doc": document, "id": key},
        )
        await db.commit()


async def test_stored_documents_come_out_as_json(app, alice, backend):
    """Documents go into the page without being parsed where possible; the page stays JSON
    for integers past 64 bits, for a JSON null, and (SQLite, which stores Python's json text)
    for NaN and Infinity, which JSON has no words for."""
    run = await start_run(alice, "quick", prompt="documents")
    big, empty, odd = await generate_ok(alice, run["id"], "image", count=3)
    await _store_output(app, big["id"], '{"n": 1180591620717411303424, "s": "NaN"}', backend)
    await _store_output(app, empty["id"], "null", backend)
    if backend == "sqlite":
        odd_json = '{"a": NaN, "b": [Infinity, -Infinity], "c": 1}'
        await _store_output(app, odd["id"], odd_json, backend)
    response = await alice.get("/api/history", params={"run_id": run["id"]})
    assert response.status_code == 200, response.text
    outputs = {item["id"]: item["output"] for item in json.loads(response.content)["items"]}
    assert outputs[big["id"]] == {"n": 2**70, "s": "NaN"}
    assert outputs[empty["id"]] == {}
    if backend == "sqlite":
        assert outputs[odd["id"]] == {"a": None, "b": [None, None], "c": 1}


def _image(fmt: str, color: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (40, 30), color).save(out, format=fmt)
    return out.getvalue()


async def test_list_page_is_byte_equal_to_the_builder(app, alice):
    """The fast path (history_json, from untyped rows) writes the very bytes the one builder of
    a generation's public shape (schemas.to_read through HistoryItem) writes: every status,
    no asset, a generated image, uploads of each stored type, adopted, failed, in the trash."""
    ctx = app.state.ctx
    run = await start_run(alice, product='a tin lantern, «bright» — naïve \\ "quoted"')
    made = await generate_ok(alice, run["id"], "object", count=3, temperature=0.35, seed=7)
    await adopt(alice, run["id"], "object", made[0]["id"])
    await generate_ok(alice, run["id"], "object", prompt="lantern [fail:content_blocked]")
    for fmt, color in (("PNG", (1, 2, 3)), ("JPEG", (90, 20, 20)), ("WEBP", (5, 99, 5))):
        upload = await alice.post(
            f"/api/runs/{run['id']}/steps/object/assets",
            files={"file": (f"x.{fmt.lower()}", _image(fmt, color), f"image/{fmt.lower()}")},
        )
        assert upload.status_code in (200, 201), upload.text
    later = await generate_ok(alice, run["id"], "scene", count=3)
    future = datetime.now(UTC) + timedelta(days=1)
    async with ctx.sessions() as db:
        for generation, status in zip(later, ("pending", "running", "canceled"), strict=True):
            await db.execute(
                update(Generation)
                .where(Generation.id == uuid.UUID(generation["id"]))
                .values(status=status, next_attempt_at=future, lease_expires_at=future)
            )
        await db.commit()
    deleted = await alice.delete(f"/api/history/{made[2]['id']}")
    assert deleted.status_code == 200, deleted.text

    user_id = uuid.UUID(alice.user["id"])
    for filters in (HistoryFilters(), HistoryFilters(deleted=True)):
        rows = await ctx.reads.run(
            repository.history_rows, user_id=user_id, filters=filters, after=None, limit=100
        )
        values = history_json.row_values(ctx.reads.dialect)
        context = await history.run_context(ctx.reads, history_json.run_ids(rows, values))
        fast = history_json.render_page(
            rows,
            values=values,
            context=context,
            trash_days=ctx.settings.trash_days,
            next_cursor="next",
            documents_as_stored=False,
        )
        async with ctx.sessions() as db:
            typed = [
                await repository.get_owned(
                    db,
                    user_id=user_id,
                    generation_id=values.uuid(row[0]),
                    include_deleted=True,
                )
                for row in rows
            ]
            items = await history.describe(db, typed, trash_days=ctx.settings.trash_days)
        built = HistoryList(items=items, next_cursor="next").model_dump_json().encode()
        assert fast == built
        shown = json.loads(fast)["items"]
        if filters.deleted:
            assert [item["id"] for item in shown] == [made[2]["id"]]
            continue
        kinds = {(i["status"], i["source"], (i["asset"] or {}).get("mime")) for i in shown}
        assert {k[0] for k in kinds} == {"pending", "running", "succeeded", "failed", "canceled"}
        assert {k[2] for k in kinds if k[1] == "upload"} == {
            "image/png",
            "image/jpeg",
            "image/webp",
        }
        assert any(i["adopted"] for i in shown) and any(i["error"] for i in shown)
