"""Faults in what FlowStudio depends on: the object store, PostgreSQL, a provider.

The object store and the database are reached through a TCP proxy that the test breaks on
purpose (the shared PostgreSQL server itself is never touched).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from urllib.parse import urlparse

import httpx
import pytest
from sqlalchemy import make_url

from tests.fixtures.flows import generate, start_run
from tests.fixtures.storage import S3_TEST_CREDENTIALS, s3_storage_url
from tests.reliability import invariants
from tests.reliability.cluster import Api, Deployment, TcpProxy, process_group
from tests.reliability.conftest import LONG, record_figure

TERMINAL = {"succeeded", "failed", "canceled"}


async def wait_for_outcome(api: Api, run_id: str, ids: list[str], timeout: float = 60.0) -> dict:
    """The generations' final statuses, read through the API."""
    deadline = time.monotonic() + timeout
    while True:
        response = await api.http.get(f"/api/runs/{run_id}/steps/image/assets?limit=100")
        assert response.status_code == 200, response.text
        found = {g["id"]: g for g in response.json()["items"] if g["id"] in ids}
        if len(found) == len(ids) and all(g["status"] in TERMINAL for g in found.values()):
            return found
        assert time.monotonic() < deadline, f"not terminal in time: {found}"
        await asyncio.sleep(0.1)


async def batch(api: Api, run_id: str, tag: str, count: int = 4) -> dict:
    response = await api.generate(run_id, prompt=f"[slow:0.05] {tag}", count=count)
    assert response.status_code == 202, response.text
    ids = [g["id"] for g in response.json()["generations"]]
    return await wait_for_outcome(api, run_id, ids)


async def readiness(api: Api) -> int:
    return (await api.http.get("/readyz")).status_code


async def test_object_store_unreachable_or_failing_mid_upload(
    tmp_path, pg_database_url: str, moto_server_url: str, s3_bucket: str
) -> None:
    endpoint = urlparse(moto_server_url)
    proxy = await TcpProxy(endpoint.hostname, endpoint.port, http=True).start()
    deployment = Deployment(
        tmp_path / "deployment",
        pg_database_url,
        {
            "storage_url": s3_storage_url(f"http://127.0.0.1:{proxy.port}", s3_bucket),
            "storage_access_key_id": S3_TEST_CREDENTIALS["access_key_id"],
            "storage_secret_access_key": S3_TEST_CREDENTIALS["secret_access_key"],
        },
    )
    outcomes: dict[str, list[str]] = {}
    try:
        async with process_group(deployment) as group:
            web, _worker = await asyncio.gather(group.start("web"), group.start("worker"))
            api = await Api.sign_up(web.base_url)
            try:
                run_id = await api.start_run()

                async def phase(name: str) -> list[dict]:
                    found = list((await batch(api, run_id, name)).values())
                    outcomes[name] = sorted(
                        g["status"] + (f"/{g['error']['code']}" if g["error"] else "")
                        for g in found
                    )
                    return found

                healthy = await phase("healthy")
                assert {g["status"] for g in healthy} == {"succeeded"}

                # The thumbnail upload breaks off halfway (after the image was stored).
                proxy.fail_http = lambda method, path: (
                    method == "PUT" and path.endswith(".thumb.webp")
                )
                for g in await phase("thumbnail upload cut"):
                    assert g["status"] == "failed" and g["error"]["code"] == "storage_error", g
                    assert g["asset"] is None

                # Every upload breaks off halfway.
                proxy.fail_http = lambda method, path: method == "PUT"
                for g in await phase("every upload cut"):
                    assert g["error"]["code"] == "storage_error", g

                # The store is unreachable: connections are refused.
                proxy.fail_http = None
                proxy.cut()
                assert await readiness(api) == 503
                for g in await phase("unreachable"):
                    assert g["error"]["code"] == "storage_error", g

                # Back: ready again, and generations succeed, without restarting anything.
                proxy.restore()
                deadline = time.monotonic() + 30
                while await readiness(api) != 200:
                    assert time.monotonic() < deadline, "not ready again after the store returned"
                    await asyncio.sleep(0.2)
                recovered = await phase("restored")
                assert {g["status"] for g in recovered} == {"succeeded"}
                assert web.alive and _worker.alive
            finally:
                await api.aclose()
            consistency = await invariants.check(deployment.in_process_settings())
    finally:
        await proxy.close()
    consistency.assert_consistent()
    assert consistency.by_status == {"succeeded": 8, "failed": 12}
    assert consistency.error_codes == {"storage_error": 12}
    assert consistency.objects_scanned == 16  # the 8 successes' images and thumbnails only
    record_figure(
        "faults: object store",
        f"{proxy.http_requests_cut} uploads cut mid-body (with client retries), 1 outage; "
        + "; ".join(f"{name}: {', '.join(sorted(set(o)))}" for name, o in outcomes.items()),
    )


async def test_database_outage_under_load(
    tmp_path, pg_database_url: str, s3_settings: dict
) -> None:
    """PostgreSQL goes away for a few seconds while requests keep coming: the service says it
    is not ready, answers 503 instead of accepting work it cannot store, and recovers on its
    own; every request it accepted (202) is kept and ends terminal."""
    url = make_url(pg_database_url)
    proxy = await TcpProxy(url.host or "127.0.0.1", url.port or 5432).start()
    through_proxy = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    deployment = Deployment(tmp_path / "deployment", through_proxy, s3_settings)
    outages = 3 if LONG else 1
    accepted: set[str] = set()
    answers: dict[int | str, int] = {}
    readiness_seen: list[tuple[str, int]] = []
    try:
        async with process_group(deployment) as group:
            web, worker = await asyncio.gather(group.start("web"), group.start("worker"))
            pids = (web.proc.pid, worker.proc.pid)
            api = await Api.sign_up(web.base_url)
            run_id = await api.start_run()
            phase = "before"
            stop = asyncio.Event()

            async def load(client: int) -> None:
                while not stop.is_set():
                    key = uuid.uuid4().hex
                    try:
                        response = await api.generate(
                            run_id, prompt=f"[slow:0.2] load {client}", idempotency_key=key
                        )
                    except httpx.TimeoutException:
                        answers["timeout"] = answers.get("timeout", 0) + 1
                        continue
                    answers[response.status_code] = answers.get(response.status_code, 0) + 1
                    if response.status_code == 202:
                        accepted.update(g["id"] for g in response.json()["generations"])
                    else:
                        assert response.status_code == 503, response.text
                        assert response.json()["code"] == "database_unavailable"
                        await asyncio.sleep(0.2)  # as a client honouring Retry-After would
                    await asyncio.sleep(0.05)

            async def probe() -> None:
                while not stop.is_set():
                    try:
                        readiness_seen.append((phase, await readiness(api)))
                    except httpx.TimeoutException:
                        readiness_seen.append((phase, 0))
                    await asyncio.sleep(0.2)

            tasks = [asyncio.create_task(load(i)) for i in range(3)]
            tasks.append(asyncio.create_task(probe()))
            try:
                await asyncio.sleep(2.0)
                for _ in range(outages):
                    phase = "outage"
                    proxy.cut()
                    await asyncio.sleep(4.0)
                    proxy.restore()
                    phase = "after"
                    deadline = time.monotonic() + 60
                    while readiness_seen[-1] != ("after", 200):
                        assert time.monotonic() < deadline, readiness_seen[-10:]
                        await asyncio.sleep(0.2)
                    await asyncio.sleep(3.0)  # accepted again, and processed
                stop.set()
                await asyncio.gather(*tasks)
            finally:
                stop.set()
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                await api.aclose()
            assert (web.proc.pid, worker.proc.pid) == pids and web.alive and worker.alive
            consistency = await invariants.settled(
                deployment.in_process_settings(database_url=pg_database_url)
            )
    finally:
        await proxy.close()
    during = [status for p, status in readiness_seen if p == "outage"]
    # Not ready while it lasted (a probe sent just before the end may already succeed).
    assert any(status != 200 for status in during), readiness_seen
    assert answers.get(503), answers  # the outage was felt by requests...
    assert answers.get(202, 0) > 0
    consistency.assert_consistent()  # ...and nothing accepted was lost or left unfinished
    assert accepted <= consistency.ids
    assert consistency.by_status.keys() <= {"succeeded", "failed"}
    record_figure(
        "faults: PostgreSQL outages of 4 s under load",
        f"{outages} ({proxy.connections_cut} connections dropped); answers {answers}; "
        f"{len(accepted)} accepted, {dict(consistency.by_status)} "
        f"errors {dict(consistency.error_codes)}",
    )


@pytest.fixture
def settings_overrides() -> dict:
    return {"provider_timeout_seconds": 0.5, "max_attempts": 2}


async def test_hanging_provider_fails_with_the_timeout_code(app, alice) -> None:
    """A provider that never answers: each attempt times out, the row ends `provider_timeout`
    after the last one, and the worker goes on with other work."""
    run = await start_run(alice, "quick")
    response = await generate(alice, run["id"], "image", wait=False, prompt="hangs [slow:600]")
    [hanging] = response.json()["generations"]
    [fine] = (await generate(alice, run["id"], "image", prompt="a quick one")).json()["generations"]
    assert fine["status"] == "succeeded"
    deadline = time.monotonic() + 60
    while True:
        item = (await alice.get(f"/api/history/{hanging['id']}")).json()
        if item["status"] in TERMINAL:
            break
        assert time.monotonic() < deadline, item
        await asyncio.sleep(0.1)
    assert item["status"] == "failed"
    assert item["error"]["code"] == "provider_timeout"
    assert item["attempts"] == 2
    assert item["asset"] is None
    record_figure("faults: hanging provider", "failed provider_timeout after 2 attempts")
