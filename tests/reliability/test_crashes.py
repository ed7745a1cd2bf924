"""kill -9 at random moments: a worker, a web process, the embedded `flowstudio serve`.

After the restarts and lease expiry, every accepted generation is terminal, no row is stuck,
the gc sweep finds no orphan or missing object and no object is referenced twice. Rounds:
a few in CI, many more with FLOWSTUDIO_TEST_LONG=1.
"""

from __future__ import annotations

import asyncio
import random
import uuid

import httpx
import pytest
from sqlalchemy import func, select

from flowstudio.db import create_engine
from flowstudio.generations.models import Generation
from tests.reliability import invariants
from tests.reliability.cluster import (
    Api,
    Deployment,
    FlowStudioProcess,
    Rotation,
    process_group,
)
from tests.reliability.conftest import record_figure, rounds

# The seed is printed, so a failing sequence of kills can be replayed.
SEED = random.randrange(2**32)


def slow_prompt(rng: random.Random, tag: str) -> str:
    return f"[slow:{rng.uniform(0.1, 0.8):.2f}] {tag}"


async def jobs_held_by(database_url: str, process: FlowStudioProcess) -> int:
    """Generations the process is running right now (its lease owner name holds its pid)."""
    assert process.proc is not None
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            return await connection.scalar(
                select(func.count())
                .select_from(Generation)
                .where(
                    Generation.status == "running",
                    Generation.lease_owner.like(f"%:{process.proc.pid}:%"),
                )
            )
    finally:
        await engine.dispose()


def assert_accepted_are_settled(consistency: invariants.Consistency, accepted: set[str]) -> None:
    consistency.assert_consistent()
    assert accepted, "no generation was accepted"
    assert accepted <= consistency.ids, accepted - consistency.ids


_WORKER_KILL_DEPLOYMENTS = {"pg_s3_deployment": "PostgreSQL + S3", "d1_s3_deployment": "D1 + S3"}


@pytest.fixture(params=list(_WORKER_KILL_DEPLOYMENTS))
def killed_workers_deployment(request: pytest.FixtureRequest) -> tuple[Deployment, str]:
    # Resolved here, before the test's event loop runs: the D1 fixtures start and empty it.
    return request.getfixturevalue(request.param), _WORKER_KILL_DEPLOYMENTS[request.param]


async def test_workers_killed_at_random_moments(
    killed_workers_deployment: tuple[Deployment, str],
) -> None:
    deployment, label = killed_workers_deployment
    rng = random.Random(SEED)
    total = rounds(ci=20, long=200)
    accepted: set[str] = set()
    interrupted = 0
    async with process_group(deployment) as group:
        web, workers = await asyncio.gather(
            group.start("web"), Rotation(group, "worker", 3).start()
        )
        api = await Api.sign_up(web.base_url)
        try:
            run_id = await api.start_run()
            for round_number in range(total):
                for _ in range(2):
                    response = await api.generate(
                        run_id, prompt=slow_prompt(rng, f"round {round_number}"), count=2
                    )
                    assert response.status_code == 202, response.text
                    accepted.update(g["id"] for g in response.json()["generations"])
                victim = await workers.ready()
                await asyncio.sleep(rng.uniform(0.0, 1.0))
                interrupted += await jobs_held_by(deployment.database_url, victim)
                workers.kill_and_replace(victim)
            await workers.all_ready()
            consistency = await invariants.settled(deployment.in_process_settings())
        finally:
            await api.aclose()
    assert_accepted_are_settled(consistency, accepted)
    record_figure(
        f"crashes: worker kill -9 rounds survived ({label})",
        f"{total} (seed {SEED}; {interrupted} running jobs interrupted; "
        f"{len(accepted)} generations: {dict(consistency.by_status)}, "
        f"errors {dict(consistency.error_codes)})",
    )


async def kill_web_round(
    rng: random.Random,
    tag: str,
    *,
    victim: FlowStudioProcess,
    survivor: FlowStudioProcess,
    token: str,
    run_id: str,
    rotation: Rotation,
    requested: dict[str, int],
    accepted: set[str],
) -> int:
    """Six requests at the victim, which is killed meanwhile; broken ones are retried on the
    survivor with the same Idempotency-Key. Returns how many broke."""
    on_victim, on_survivor = Api(victim.base_url, token), Api(survivor.base_url, token)
    broken = 0

    async def one(i: int) -> None:
        nonlocal broken
        key = f"{tag}-{i}-{uuid.uuid4().hex[:8]}"
        count = rng.choice([1, 2, 3])
        requested[key] = count
        prompt = slow_prompt(rng, tag)
        # Some wait for their outcome (Prefer: wait), so the kill finds them open.
        wait = rng.choice([None, 3.0])
        await asyncio.sleep(rng.uniform(0.0, 0.3))
        try:
            response = await on_victim.generate(
                run_id, prompt=prompt, count=count, idempotency_key=key, wait=wait
            )
        except httpx.TransportError:
            broken += 1
            # The client retries elsewhere, as behind a load balancer.
            response = await on_survivor.generate(
                run_id, prompt=prompt, count=count, idempotency_key=key
            )
        assert response.status_code in (200, 202), response.text
        generations = response.json()["generations"]
        assert len(generations) == count
        accepted.update(g["id"] for g in generations)

    async def kill_soon() -> None:
        await asyncio.sleep(rng.uniform(0.0, 0.3))
        rotation.kill_and_replace(victim)

    try:
        await asyncio.gather(kill_soon(), *(one(i) for i in range(6)))
    finally:
        await on_victim.aclose()
        await on_survivor.aclose()
    return broken


async def test_web_processes_killed_at_random_moments(pg_s3_deployment: Deployment) -> None:
    """Requests in flight on a killed web process are retried on the other one with the same
    Idempotency-Key: an accepted request is never lost, and never doubled."""
    deployment = pg_s3_deployment
    rng = random.Random(SEED)
    total = rounds(ci=20, long=100)
    accepted: set[str] = set()
    requested: dict[str, int] = {}  # idempotency key -> count
    broken = 0
    async with process_group(deployment) as group:
        webs, _worker = await asyncio.gather(
            Rotation(group, "web", 3).start(), group.start("worker")
        )
        first = await Api.sign_up(webs.processes[0].base_url)
        token = first.token
        await first.aclose()
        async with httpx.AsyncClient(base_url=webs.processes[0].base_url, timeout=60) as http:
            response = await http.post(
                "/api/flows/tiny/runs", json={}, headers={"Authorization": f"Bearer {token}"}
            )
            run_id = response.json()["id"]
        for round_number in range(total):
            broken += await kill_web_round(
                rng,
                f"web round {round_number}",
                victim=await webs.ready(),
                survivor=await webs.ready(1),
                rotation=webs,
                token=token,
                run_id=run_id,
                requested=requested,
                accepted=accepted,
            )
        await webs.all_ready()
        consistency = await invariants.settled(deployment.in_process_settings())
    assert_accepted_are_settled(consistency, accepted)
    # Every key made exactly the generations asked for: retries did not double anything.
    engine = create_engine(deployment.database_url)
    try:
        async with engine.connect() as connection:
            made = dict(
                (
                    await connection.execute(
                        select(Generation.idempotency_key, func.count()).group_by(
                            Generation.idempotency_key
                        )
                    )
                ).all()
            )
    finally:
        await engine.dispose()
    assert made == requested
    record_figure(
        "crashes: web kill -9 rounds survived (PostgreSQL + S3)",
        f"{total} (seed {SEED}; {broken} requests broken and retried elsewhere; "
        f"{len(accepted)} generations: {dict(consistency.by_status)})",
    )


async def test_embedded_serve_killed_and_restarted_on_the_same_data_dir(
    sqlite_local_deployment: Deployment,
) -> None:
    """The embedded default (SQLite + local objects + in-process worker), killed mid-work."""
    deployment = sqlite_local_deployment
    rng = random.Random(SEED)
    total = rounds(ci=20, long=100)
    accepted: set[str] = set()
    interrupted = 0
    token = run_id = None
    async with process_group(deployment) as group:
        for round_number in range(total):
            serve = await group.start("serve")
            api = Api(serve.base_url, token) if token else await Api.sign_up(serve.base_url)
            token = api.token
            try:
                if run_id is None:
                    run_id = await api.start_run()
                for _ in range(2):
                    response = await api.generate(
                        run_id, prompt=slow_prompt(rng, f"serve round {round_number}"), count=2
                    )
                    assert response.status_code == 202, response.text
                    accepted.update(g["id"] for g in response.json()["generations"])
            finally:
                await api.aclose()
            await asyncio.sleep(rng.uniform(0.0, 1.0))
            interrupted += await jobs_held_by(deployment.database_url, serve)
            serve.kill()
        await group.start("serve")
        consistency = await invariants.settled(deployment.in_process_settings())
    assert_accepted_are_settled(consistency, accepted)
    record_figure(
        "crashes: embedded serve kill -9 rounds survived (SQLite + local)",
        f"{total} (seed {SEED}; {interrupted} running jobs interrupted; "
        f"{len(accepted)} generations: {dict(consistency.by_status)}, "
        f"errors {dict(consistency.error_codes)})",
    )
