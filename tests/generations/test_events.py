"""Server-Sent Events: one `generation` event per status change, over a real HTTP server."""

from __future__ import annotations

import asyncio
import json

import httpx

from tests.fixtures.flows import generate, start_run


async def collect_events(
    base_url: str, cookies, run_id: str, *, until, timeout: float = 20, kinds=("generation",)
):
    events = []
    async with httpx.AsyncClient(base_url=base_url, cookies=cookies, timeout=timeout) as http:
        async with http.stream("GET", f"/api/runs/{run_id}/events") as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            event_type = None
            async for line in response.aiter_lines():
                if line.startswith("event:"):
                    event_type = line.split(":", 1)[1].strip()
                elif line.startswith("data:") and event_type in kinds:
                    events.append({"event": event_type, **json.loads(line.split(":", 1)[1])})
                    if until(events):
                        return events
    return events


async def test_sse_delivers_the_status_sequence(app, alice, live_server):
    run = await start_run(alice)
    cookies = dict(alice.http.cookies)

    def all_done(events):
        finished = {e["id"] for e in events if e["status"] in ("succeeded", "failed")}
        return len(finished) == 2

    listener = asyncio.create_task(collect_events(live_server, cookies, run["id"], until=all_done))
    await asyncio.sleep(0.3)  # let the stream subscribe
    response = await generate(alice, run["id"], "object", wait=False, count=2)
    ids = [g["id"] for g in response.json()["generations"]]
    events = await asyncio.wait_for(listener, 20)
    for generation_id in ids:
        statuses = [e["status"] for e in events if e["id"] == generation_id]
        assert statuses == ["pending", "running", "succeeded"], statuses
    final = [e for e in events if e["status"] == "succeeded"]
    assert all(e["asset"]["thumbnail_url"] for e in final)
    assert all("user_id" not in e for e in events)


async def test_sse_shows_failures(app, alice, live_server):
    run = await start_run(alice)
    cookies = dict(alice.http.cookies)
    listener = asyncio.create_task(
        collect_events(
            live_server,
            cookies,
            run["id"],
            until=lambda ev: any(e["status"] == "failed" for e in ev),
        )
    )
    await asyncio.sleep(0.3)
    await generate(alice, run["id"], "object", wait=False, prompt="boom [fail:content_blocked]")
    events = await asyncio.wait_for(listener, 20)
    assert events[-1]["error"]["code"] == "content_blocked"


async def test_sse_announces_adoption_changes(app, alice, live_server):
    from tests.fixtures.flows import adopt, generate_and_adopt

    run = await start_run(alice)
    rid = run["id"]
    first = await generate_and_adopt(alice, rid, "object")
    await generate_and_adopt(alice, rid, "scene")
    [second] = (await generate(alice, rid, "object")).json()["generations"]
    listener = asyncio.create_task(
        collect_events(
            live_server,
            dict(alice.http.cookies),
            rid,
            kinds=("adoption",),
            until=lambda ev: len(ev) == 2,
        )
    )
    await asyncio.sleep(0.3)
    await adopt(alice, rid, "object", second["id"])
    await alice.post(f"/api/runs/{rid}/steps/object/clear")
    events = await asyncio.wait_for(listener, 20)
    assert events[0]["adopted_generation_id"] == second["id"] != first["id"]
    assert events[0]["invalidated_steps"] == ["scene"]
    assert events[1]["adopted_generation_id"] is None and events[1]["step_id"] == "object"


async def test_an_event_is_what_the_detail_view_says_and_a_long_chinese_prompt_fits(
    app, alice, live_server
):
    """A generation event carries the generation exactly as GET /api/history/{id} shows it
    (one builder), serialised once; a prompt too long for a NOTIFY payload is cut in the event
    (never in the row), also when it is CJK text of three bytes a character."""
    prompt = "一只红色的陶瓷茶壶，放在木桌上。" * 240  # 3,840 characters, 11,520 bytes
    run = await start_run(alice, "quick", prompt="short")
    cookies = dict(alice.http.cookies)

    def done(events):
        return any(e["status"] in ("succeeded", "failed") for e in events)

    listener = asyncio.create_task(collect_events(live_server, cookies, run["id"], until=done))
    await asyncio.sleep(0.3)
    response = await generate(alice, run["id"], "image", wait=False, prompt=prompt)
    assert response.status_code == 202, response.text
    events = await asyncio.wait_for(listener, 20)
    final = events[-1]
    assert final["prompt_truncated"] is True
    assert final["prompt"] == prompt[:500] + "…"
    detail = (await alice.get(f"/api/history/{final['id']}")).json()
    assert detail["prompt"] == prompt
    shown = {k: v for k, v in final.items() if k not in ("event", "prompt", "prompt_truncated")}
    assert shown == {
        k: v
        for k, v in detail.items()
        if k not in ("prompt", "run_title", "step_title", "flow_title", "purge_after")
    }
