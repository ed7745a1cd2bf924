"""Scale-out: generations per second with one `flowstudio worker` and with two.

    uv run python -m bench.scale_out [--per-phase 300] [--delay 0.25] [--concurrency 4]

Runs the installation the reliability test runs (tests/reliability/test_scale_out.py): two
`flowstudio serve --no-worker` and `flowstudio worker` processes on PostgreSQL (a throw-away
database on FLOWSTUDIO_TEST_POSTGRES_URL's server, default postgres@127.0.0.1:5432) and S3 (a
moto server on loopback). Each phase submits `--per-phase` generations of a 128×128 step in 3x
requests through both web processes, with a `[slow:--delay]` provider wait, and times the first
request to the last terminal row. Phase one runs one worker, phase two adds the second.
Records bench/results/scale_out.json.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import tempfile
import uuid
from pathlib import Path

import boto3
from moto.server import ThreadedMotoServer
from sqlalchemy import make_url
from tests.fixtures.db import DEFAULT_POSTGRES_URL, _execute_autocommit
from tests.fixtures.storage import S3_TEST_CREDENTIALS, S3_TEST_REGION, s3_storage_url
from tests.reliability.cluster import Api, Deployment, process_group, run_phase

from bench.common import record
from flowstudio.db import create_engine
from flowstudio.migrate import upgrade_sync


async def measure(args: argparse.Namespace, database_url: str, storage: dict) -> dict:
    with tempfile.TemporaryDirectory(prefix="flowstudio-scale-out-") as root:
        deployment = Deployment(
            Path(root),
            database_url,
            storage,
            {"lease_seconds": 10.0, "worker_concurrency": args.concurrency},
        )
        engine = create_engine(database_url)
        try:
            async with process_group(deployment) as group:
                *webs, _ = await asyncio.gather(
                    group.start("web"), group.start("web"), group.start("worker")
                )
                alice = await Api.sign_up(webs[0].base_url)
                apis = [alice, alice.at(webs[1].base_url)]
                runs = [await alice.start_run() for _ in range(6)]
                # A short warm-up, so the first phase does not pay for cold caches.
                await run_phase(engine, apis, runs, 12, args.delay, "warm-up")
                _, one = await run_phase(engine, apis, runs, args.per_phase, args.delay, "one")
                await group.start("worker")
                _, two = await run_phase(engine, apis, runs, args.per_phase, args.delay, "two")
                for api in apis:
                    await api.aclose()
        finally:
            await engine.dispose()
    count = args.per_phase // 3 * 3
    return {
        "per_phase": count,
        "provider_delay_seconds": args.delay,
        "worker_concurrency": args.concurrency,
        "one_worker": {"seconds": round(one, 2), "per_second": round(count / one, 2)},
        "two_workers": {"seconds": round(two, 2), "per_second": round(count / two, 2)},
        "ratio": round(one / two, 2),
        "ideal_per_second_per_worker": round(args.concurrency / args.delay, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-phase", type=int, default=300)
    parser.add_argument("--delay", type=float, default=0.25)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()

    admin = os.environ.get("FLOWSTUDIO_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)
    name = f"flowstudio_bench_scale_{uuid.uuid4().hex[:8]}"
    asyncio.run(_execute_autocommit(admin, f'CREATE DATABASE "{name}"'))
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per S3 request
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    try:
        database_url = make_url(admin).set(database=name).render_as_string(hide_password=False)
        upgrade_sync(database_url)
        host, port = moto.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name=S3_TEST_REGION,
            aws_access_key_id=S3_TEST_CREDENTIALS["access_key_id"],
            aws_secret_access_key=S3_TEST_CREDENTIALS["secret_access_key"],
        ).create_bucket(Bucket="scale-out")
        storage = {
            "storage_url": s3_storage_url(endpoint, "scale-out"),
            "storage_access_key_id": S3_TEST_CREDENTIALS["access_key_id"],
            "storage_secret_access_key": S3_TEST_CREDENTIALS["secret_access_key"],
        }
        result = asyncio.run(measure(args, database_url, storage))
    finally:
        moto.stop()
        asyncio.run(_execute_autocommit(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    path = record("scale_out", result)
    print(
        f"1 worker: {result['one_worker']['per_second']} generations/s, "
        f"2 workers: {result['two_workers']['per_second']} generations/s, "
        f"ratio {result['ratio']} (ideal 2.0; each worker at most "
        f"{result['ideal_per_second_per_worker']}/s) -> {path}"
    )


if __name__ == "__main__":
    main()
