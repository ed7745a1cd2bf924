"""What each main unit of work costs on D1, counted in requests: reads go out one by one, and
every write of a unit travels in one request (a batch, which D1 runs all or nothing)."""

from __future__ import annotations

import pytest

from tests.fixtures.d1 import D1Requests
from tests.fixtures.flows import adopt, generate, generate_and_adopt, generate_ok, start_run

_WRITES = ("INSERT", "UPDATE", "DELETE")


@pytest.fixture
def backend() -> str:
    return "d1"


def _writing(requests: list[list[str]]) -> list[list[str]]:
    """The requests that carry writes."""
    return [r for r in requests if any(sql.lstrip().upper().startswith(_WRITES) for sql in r)]


def _tables(request: list[str], verb: str) -> set[str]:
    words = [sql.split() for sql in request]
    if verb == "UPDATE":
        return {w[1].strip('"') for w in words if w[0].upper() == "UPDATE"}
    return {w[2].strip('"') for w in words if w[0].upper() == verb}


async def test_a_generate_is_three_requests_and_one_batch_of_writes(app, alice):
    await app.state.worker.stop()
    run = await start_run(alice)
    with D1Requests() as d1:
        response = await generate(alice, run["id"], "object", count=3, wait=False)
    assert response.status_code == 202, response.text
    assert d1.count == 3, d1.requests
    [batch] = _writing(d1.requests)
    assert batch is d1.requests[-1]
    assert _tables(batch, "INSERT") == {"generations"}
    # The run's updated_at and the queue's admission check ride in the same batch, and the
    # read of the answer closes it.
    assert _tables(batch, "UPDATE") == {"runs", "user_queues"}
    assert batch[-1].lstrip().upper().startswith("SELECT")
    # D1 binds at most 100 parameters a statement: the three rows' INSERT is cut to fit.
    assert max(sql.count("?") for sql in batch) <= 100


async def test_an_adoption_and_its_invalidations_are_one_batch(app, alice):
    run = await start_run(alice)
    await generate_and_adopt(alice, run["id"], "object")
    await generate_and_adopt(alice, run["id"], "scene")
    [other] = await generate_ok(alice, run["id"], "object")
    await app.state.worker.stop()
    with D1Requests() as d1:
        await adopt(alice, run["id"], "object", other["id"])
    [batch] = _writing(d1.requests)
    # The adoption, the run's updated_at and the downstream invalidation (which answers which
    # steps it cleared, so it goes last).
    assert _tables(batch, "UPDATE") == {"run_steps", "runs"}, batch
    assert "RETURNING" in batch[-1].upper()
    described = (await alice.get(f"/api/runs/{run['id']}")).json()
    steps = {s["id"]: s for s in described["steps"]}
    assert steps["object"]["adopted_generation_id"] == other["id"]
    assert steps["scene"]["adopted_generation_id"] is None


async def test_clearing_an_adoption_is_one_batch(app, alice):
    run = await start_run(alice)
    await generate_and_adopt(alice, run["id"], "object")
    await generate_and_adopt(alice, run["id"], "scene")
    await app.state.worker.stop()
    with D1Requests() as d1:
        response = await alice.post(f"/api/runs/{run['id']}/steps/object/clear")
    assert response.status_code == 200, response.text
    assert response.json()["invalidated_steps"] == ["scene"]
    [batch] = _writing(d1.requests)
    assert _tables(batch, "UPDATE") == {"run_steps", "runs"}, batch


async def test_a_batch_delete_is_one_batch_of_writes(app, alice):
    await app.state.worker.stop()
    run = await start_run(alice)
    made = (await generate(alice, run["id"], "object", count=3, wait=False)).json()
    ids = [g["id"] for g in made["generations"]]
    with D1Requests() as d1:
        response = await alice.post("/api/history/delete", json={"ids": ids})
    assert response.status_code == 200, response.text
    assert len(_writing(d1.requests)) == 1, d1.requests
