"""Runs, step readiness, adoption, clearing and downstream invalidation; uploads."""

from __future__ import annotations

import asyncio

import pytest

from tests.fixtures.flows import (
    adopt,
    generate,
    generate_and_adopt,
    generate_ok,
    png_bytes,
    sha256,
    start_run,
)


def steps_by_id(run: dict) -> dict:
    return {step["id"]: step for step in run["steps"]}


async def get_run(user, run_id: str) -> dict:
    response = await user.get(f"/api/runs/{run_id}")
    assert response.status_code == 200, response.text
    return response.json()


async def test_flows_are_listed(alice):
    flows = (await alice.get("/api/flows")).json()["items"]
    slugs = {flow["slug"] for flow in flows}
    assert {"quick", "product-shot", "character-sheet"} <= slugs
    shot = (await alice.get("/api/flows/product-shot")).json()
    assert [s["id"] for s in shot["steps"]] == ["object", "scene", "poster"]
    assert shot["steps"][0]["downstream"] == ["scene", "poster"]
    missing = await alice.get("/api/flows/nope")
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"


async def test_start_run_validates_inputs(alice):
    bad = await alice.post("/api/flows/product-shot/runs", json={"inputs": {"nope": "x"}})
    assert bad.status_code == 422 and bad.json()["code"] == "validation_error"
    assert any(e["field"] == "inputs.nope" for e in bad.json()["errors"])
    missing = await alice.post("/api/flows/quick/runs", json={"inputs": {"prompt": "  "}})
    assert missing.status_code == 422
    run = await start_run(alice, "product-shot", product="a red bicycle")
    assert run["inputs"]["product"] == "a red bicycle"
    assert "a red bicycle" in run["title"]
    steps = steps_by_id(run)
    assert steps["object"]["ready"] is True
    assert steps["scene"]["ready"] is False and steps["scene"]["waiting_for"] == ["object"]
    assert steps["poster"]["waiting_for"] == ["scene", "object"]


async def test_step_not_ready_until_inputs_adopted(alice):
    run = await start_run(alice)
    response = await generate(alice, run["id"], "scene", wait=False)
    assert response.status_code == 409
    assert response.json()["code"] == "step_not_ready"
    assert response.json()["waiting_for"] == ["object"]
    unknown = await generate(alice, run["id"], "nope", wait=False)
    assert unknown.status_code == 404


async def test_adopt_clear_and_downstream_invalidation(app, alice):
    run = await start_run(alice)
    rid = run["id"]
    first_object = await generate_and_adopt(alice, rid, "object")
    scene = await generate_and_adopt(alice, rid, "scene")
    # The scene was drawn from the adopted object image.
    assert scene["params"]["inputs"][0]["generation_id"] == first_object["id"]
    poster = await generate_and_adopt(alice, rid, "poster")
    assert [i["step_id"] for i in poster["params"]["inputs"]] == ["scene", "object"]
    assert poster["asset"]["width"] == 1024 and poster["asset"]["height"] == 1536

    state = steps_by_id(await get_run(alice, rid))
    assert state["poster"]["adopted_generation_id"] == poster["id"]
    assert state["object"]["candidate_counts"]["succeeded"] == 1

    # Re-adopting the same candidate changes nothing.
    same = await adopt(alice, rid, "object", first_object["id"])
    assert same["invalidated_steps"] == []

    # A different object invalidates scene and poster, but keeps every candidate.
    [second_object] = await generate_ok(alice, rid, "object")
    result = await adopt(alice, rid, "object", second_object["id"])
    assert result["adopted_generation_id"] == second_object["id"]
    assert result["adopted_key"] == second_object["asset"]["key"]
    assert result["invalidated_steps"] == ["scene", "poster"]
    state = steps_by_id(await get_run(alice, rid))
    assert state["scene"]["adopted_generation_id"] is None
    assert state["scene"]["invalidated_at"] is not None
    assert state["poster"]["adopted_generation_id"] is None
    assert state["scene"]["candidate_counts"]["succeeded"] == 1
    assert state["object"]["candidate_counts"]["succeeded"] == 2
    listed = (await alice.get(f"/api/runs/{rid}/steps/object/assets")).json()
    assert listed["adopted_generation_id"] == second_object["id"]
    assert {g["id"]: g["adopted"] for g in listed["items"]} == {
        second_object["id"]: True,
        first_object["id"]: False,
    }

    # Re-adopt the scene, then clear the object (Plan A): scene loses its adoption again.
    await adopt(alice, rid, "scene", scene["id"])
    cleared = await alice.post(f"/api/runs/{rid}/steps/object/clear")
    assert cleared.status_code == 200
    assert cleared.json() == {"adopted_generation_id": None, "invalidated_steps": ["scene"]}
    state = steps_by_id(await get_run(alice, rid))
    assert state["object"]["adopted_generation_id"] is None
    assert state["object"]["candidates"] == 2
    assert state["scene"]["ready"] is False
    # Clearing again is harmless.
    again = await alice.post(f"/api/runs/{rid}/steps/object/clear")
    assert again.json()["invalidated_steps"] == []


async def test_diamond_flow_invalidates_both_branches(alice):
    flow = (await alice.get("/api/flows/character-sheet")).json()
    first, *_ = [s["id"] for s in flow["steps"]]
    run = await start_run(alice, "character-sheet")
    rid = run["id"]
    order = [s["id"] for s in flow["steps"]]
    for step_id in order:
        await generate_and_adopt(alice, rid, step_id)
    [other] = await generate_ok(alice, rid, first)
    result = await adopt(alice, rid, first, other["id"])
    assert result["invalidated_steps"] == order[1:]


async def test_adopt_refusals(app, alice):
    run = await start_run(alice)
    rid = run["id"]
    [failed] = await generate_ok(alice, rid, "object", prompt="x [fail:invalid_request]")
    refused = await alice.post(
        f"/api/runs/{rid}/steps/object/adopt", json={"generation_id": failed["id"]}
    )
    assert refused.status_code == 409 and refused.json()["code"] == "not_adoptable"
    ok = await generate_and_adopt(alice, rid, "object")
    wrong_step = await alice.post(
        f"/api/runs/{rid}/steps/scene/adopt", json={"generation_id": ok["id"]}
    )
    assert wrong_step.status_code == 404
    other_run = await start_run(alice)
    wrong_run = await alice.post(
        f"/api/runs/{other_run['id']}/steps/object/adopt", json={"generation_id": ok["id"]}
    )
    assert wrong_run.status_code == 404


async def test_concurrent_adopts_leave_one_consistent_winner(alice):
    run = await start_run(alice)
    rid = run["id"]
    await generate_and_adopt(alice, rid, "object")
    await generate_and_adopt(alice, rid, "scene")
    candidates = await generate_ok(alice, rid, "object", count=4)
    results = await asyncio.gather(
        *[
            alice.post(f"/api/runs/{rid}/steps/object/adopt", json={"generation_id": c["id"]})
            for c in candidates
        ]
    )
    assert {r.status_code for r in results} == {200}
    state = steps_by_id(await get_run(alice, rid))
    assert state["object"]["adopted_generation_id"] in {c["id"] for c in candidates}
    assert state["scene"]["adopted_generation_id"] is None
    listed = (await alice.get(f"/api/runs/{rid}/steps/object/assets")).json()["items"]
    assert sum(1 for g in listed if g["adopted"]) == 1


@pytest.mark.parametrize("storage_kind", ["local", "s3"])
async def test_upload_candidate_is_content_addressed(app, alice):
    run = await start_run(alice)
    rid = run["id"]
    data = png_bytes((200, 30, 30))
    files = {"file": ("red.png", data, "image/png")}
    first = await alice.post(f"/api/runs/{rid}/steps/object/assets", files=files)
    assert first.status_code == 201, first.text
    body = first.json()
    assert body["status"] == "succeeded" and body["source"] == "upload"
    assert body["asset"]["sha256"] == sha256(data)
    assert body["asset"]["key"] == (
        f"u/{alice.user['id']}/r/{rid}/object/upload-{sha256(data)}.png"
    )
    assert (body["asset"]["width"], body["asset"]["height"]) == (64, 48)
    assert await app.state.ctx.store.get(body["asset"]["key"]) == data
    again = await alice.post(f"/api/runs/{rid}/steps/object/assets", files=files)
    assert again.status_code == 200 and again.json()["id"] == body["id"]
    listed = (await alice.get(f"/api/runs/{rid}/steps/object/assets")).json()["items"]
    assert [g["id"] for g in listed] == [body["id"]]
    # An upload can be adopted and feeds the next step.
    await adopt(alice, rid, "object", body["id"])
    [scene] = await generate_ok(alice, rid, "scene")
    assert scene["status"] == "succeeded"
    not_image = await alice.post(
        f"/api/runs/{rid}/steps/object/assets",
        files={"file": ("x.png", b"not an image", "image/png")},
    )
    assert not_image.status_code == 415
    assert not_image.json()["code"] == "unsupported_media_type"


async def test_runs_list_with_cursor(alice):
    created = [await start_run(alice, "quick", prompt=f"cat {i}") for i in range(5)]
    page = (await alice.get("/api/runs?limit=2")).json()
    seen = [r["id"] for r in page["items"]]
    while page["next_cursor"]:
        page = (await alice.get(f"/api/runs?limit=2&cursor={page['next_cursor']}")).json()
        seen.extend(r["id"] for r in page["items"])
    assert seen == [r["id"] for r in reversed(created)]
    bad = await alice.get("/api/runs?cursor=garbage")
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_cursor"
    too_big = await alice.get("/api/runs?limit=101")
    assert too_big.status_code == 422


async def test_delete_run_hides_it_and_its_candidates(alice):
    run = await start_run(alice)
    await generate_ok(alice, run["id"], "object")
    deleted = await alice.delete(f"/api/runs/{run['id']}")
    assert deleted.status_code == 200
    assert deleted.json()["generations_deleted"] == 1
    assert (await alice.get(f"/api/runs/{run['id']}")).status_code == 404
    assert run["id"] not in [r["id"] for r in (await alice.get("/api/runs")).json()["items"]]


async def test_other_users_runs_are_404(alice, bob):
    run = await start_run(alice)
    rid = run["id"]
    generation = await generate_and_adopt(alice, rid, "object")
    attempts = [
        await bob.get(f"/api/runs/{rid}"),
        await bob.delete(f"/api/runs/{rid}"),
        await bob.get(f"/api/runs/{rid}/steps/object/assets"),
        await bob.post(f"/api/runs/{rid}/steps/object/generate", json={}),
        await bob.post(
            f"/api/runs/{rid}/steps/object/adopt", json={"generation_id": generation["id"]}
        ),
        await bob.post(f"/api/runs/{rid}/steps/object/clear"),
        await bob.post(
            f"/api/runs/{rid}/steps/object/assets",
            files={"file": ("a.png", png_bytes((1, 2, 3)), "image/png")},
        ),
        await bob.get(f"/api/runs/{rid}/events"),
    ]
    for response in attempts:
        assert response.status_code == 404, (response.request.url, response.text)
        assert response.json()["code"] == "not_found"
    # Bob's own run cannot adopt Alice's generation either.
    bobs = await start_run(bob)
    stolen = await bob.post(
        f"/api/runs/{bobs['id']}/steps/object/adopt", json={"generation_id": generation["id"]}
    )
    assert stolen.status_code == 404
    state = steps_by_id(await get_run(alice, rid))
    assert state["object"]["adopted_generation_id"] == generation["id"]
    assert (await bob.get("/api/runs")).json()["items"] == [
        r for r in (await bob.get("/api/runs")).json()["items"] if r["id"] == bobs["id"]
    ]


async def test_unauthenticated_is_401(client):
    for method, url in [
        ("GET", "/api/flows"),
        ("GET", "/api/runs"),
        ("POST", "/api/flows/quick/runs"),
    ]:
        response = await client.request(method, url)
        assert response.status_code == 401, url
        assert response.json()["code"] == "unauthenticated"
