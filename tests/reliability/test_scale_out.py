"""Many processes, one installation: 2 × `serve --no-worker` and 2 × `worker` on PostgreSQL + S3.

Drives 300 generations through both web processes (150 while one worker runs, 150 with two),
follows every run's live stream on both web processes, and checks that every generation ends
exactly once, that each stream saw every status change, and that database and bucket agree.
The 1-vs-2-worker throughput ratio is printed (no timing is asserted; `bench/scale_out.py`
records it).
"""

from __future__ import annotations

import asyncio
import contextlib

from sqlalchemy import select

from flowstudio.db import create_engine
from flowstudio.generations.models import TERMINAL_STATUSES, Generation
from tests.reliability import invariants
from tests.reliability.cluster import Api, Deployment, process_group, run_phase
from tests.reliability.conftest import record_figure

PER_PHASE = 150
RUNS = 6
PROVIDER_DELAY = 0.25  # seconds each generation spends "at the provider" ([slow:N] hook)
WORKER_CONCURRENCY = 4


async def test_two_web_processes_and_two_workers_on_postgres_and_s3(
    pg_s3_deployment: Deployment,
) -> None:
    deployment = pg_s3_deployment
    deployment.values.update(lease_seconds=10.0, worker_concurrency=WORKER_CONCURRENCY)
    engine = create_engine(deployment.database_url)
    streams: list[asyncio.Task[None]] = []
    async with process_group(deployment) as group:
        *webs, first_worker = await asyncio.gather(
            group.start("web"), group.start("web"), group.start("worker")
        )
        alice = await Api.sign_up(webs[0].base_url)
        apis = [alice, alice.at(webs[1].base_url)]
        try:
            runs = [await alice.start_run() for _ in range(RUNS)]
            # Every run's event stream, on each web process, from before the first request.
            seen: dict[tuple[int, str], list[dict]] = {}
            for w, api in enumerate(apis):
                for run in runs:
                    connected = asyncio.Event()
                    sink = seen[(w, run)] = []
                    streams.append(asyncio.create_task(api.events(run, sink, connected)))
                    await asyncio.wait_for(connected.wait(), 30)

            one_ids, one_seconds = await run_phase(
                engine, apis, runs, PER_PHASE, PROVIDER_DELAY, "one worker"
            )
            await group.start("worker")
            two_ids, two_seconds = await run_phase(
                engine, apis, runs, PER_PHASE, PROVIDER_DELAY, "two workers"
            )
            ids = one_ids + two_ids
            assert len(set(ids)) == 2 * PER_PHASE
            # Let the last events cross NOTIFY and reach both streams.
            await asyncio.sleep(1.0)
        finally:
            for task in streams:
                task.cancel()
            for task in streams:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            for api in apis:
                await api.aclose()
        assert first_worker.alive

    try:
        async with engine.connect() as connection:
            rows = (
                await connection.execute(
                    select(Generation.id, Generation.status, Generation.output)
                )
            ).all()
    finally:
        await engine.dispose()
    status = {str(r.id): r.status for r in rows}
    assert set(status) == set(ids)
    assert {status[i] for i in ids} == {"succeeded"}
    # Both workers took part in the second phase.
    workers = {r.output.get("worker") for r in rows if str(r.id) in set(two_ids)}
    assert len(workers) == 2, workers

    # Every stream, on either web process, saw each of its generations go pending → running →
    # succeeded, and reach a terminal state exactly once.
    for (w, run), events in seen.items():
        changes: dict[str, list[str]] = {}
        for event in events:
            changes.setdefault(event["id"], []).append(event["status"])
        expected = {i for i in ids if i in changes} | {
            e["id"] for e in events if e["run_id"] == run
        }
        assert expected, f"web {w} saw nothing of run {run}"
        for generation_id in expected:
            statuses = changes.get(generation_id, [])
            terminal = [s for s in statuses if s in TERMINAL_STATUSES]
            assert terminal == ["succeeded"], (w, generation_id, statuses)
            assert statuses[0] == "pending" and "running" in statuses, (w, statuses)
    per_stream = {w: sum(len({e["id"] for e in seen[(w, run)]}) for run in runs) for w in range(2)}
    assert per_stream == {0: len(ids), 1: len(ids)}, per_stream

    consistency = await invariants.check(deployment.in_process_settings())
    consistency.assert_consistent()
    assert consistency.by_status == {"succeeded": len(ids)}
    assert consistency.objects_scanned == 2 * len(ids)  # image + thumbnail, nothing else

    one_rate, two_rate = PER_PHASE / one_seconds, PER_PHASE / two_seconds
    record_figure("scale-out: 1 worker", f"{one_rate:.1f} generations/s ({one_seconds:.1f} s)")
    record_figure("scale-out: 2 workers", f"{two_rate:.1f} generations/s ({two_seconds:.1f} s)")
    record_figure("scale-out: throughput ratio 2/1 workers", f"{two_rate / one_rate:.2f}")
