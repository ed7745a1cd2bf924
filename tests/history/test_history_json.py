"""List pages are written straight from database rows; they must say exactly what the typed
detail view (HistoryItem through pydantic) says, for every kind of generation, on both databases."""

from __future__ import annotations

from datetime import UTC, datetime

import pydantic_core
import pytest

from flowstudio.generations.history_json import SQLiteValues
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


@pytest.mark.parametrize(
    "value",
    [
        datetime(2026, 1, 31, 23, 59, 59, tzinfo=UTC),
        datetime(2026, 1, 31, 23, 59, 59, 450, tzinfo=UTC),
        datetime.fromisoformat("2026-02-01T01:59:59.123456+02:00"),
    ],
)
def test_driver_times_are_written_as_pydantic_writes_them(value):
    from flowstudio.generations.history_json import RowValues

    # Typed reads convert to UTC (UTCDateTime), so the API writes every time with a Z.
    expected = pydantic_core.to_json(value.astimezone(UTC)).decode().strip('"')
    assert RowValues().text_time(value) == expected
