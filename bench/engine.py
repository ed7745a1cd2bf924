"""Generation engine latency and throughput on the embedded defaults (SQLite + local store).

    uv run python bench/engine.py [--single 20] [--batch 100]

Measures (1) the time from `POST …/generate` to the candidate being `succeeded`, for one `local`
candidate at a time, as seen by a client waiting on the run's SSE stream; and (2) generations per
second for a burst of candidates with zero provider delay, from the first request to the last
`succeeded`.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import httpx

from bench.common import record, served, summary, watched_quick_run


async def main(single: int, batch: int, concurrency: int) -> None:
    async with served(worker_concurrency=concurrency, per_user_concurrency=concurrency) as (
        base,
        _app,
    ):
        async with httpx.AsyncClient(base_url=base, timeout=60) as http:
            watched = await watched_quick_run(http, "bench@example.com")
            headers, url, done, watcher = (
                watched.headers,
                watched.generate_url,
                watched.done,
                watched.watcher,
            )

            latencies = []
            for _ in range(single):
                start = time.perf_counter()
                response = await http.post(url, json={"count": 1}, headers=headers)
                [generation] = response.json()["generations"]
                while generation["id"] not in done:
                    await asyncio.sleep(0.001)
                latencies.append((done[generation["id"]] - start) * 1000)

            done.clear()
            start = time.perf_counter()
            ids = []
            for _ in range(batch // 4):
                response = await http.post(url, json={"count": 4}, headers=headers)
                ids.extend(g["id"] for g in response.json()["generations"])
            while not all(i in done for i in ids):
                await asyncio.sleep(0.005)
            elapsed = max(done[i] for i in ids) - start
            watcher.cancel()

    result = {
        "generate_to_succeeded_ms": summary(latencies),
        "burst": {
            "generations": len(ids),
            "seconds": round(elapsed, 3),
            "generations_per_second": round(len(ids) / elapsed, 1),
            "worker_concurrency": concurrency,
        },
    }
    path = record("engine", result)
    print(
        f"generate → succeeded, one local candidate (n={single}): "
        f"p50 {result['generate_to_succeeded_ms']['p50']} ms, "
        f"p99 {result['generate_to_succeeded_ms']['p99']} ms"
    )
    print(
        f"burst of {len(ids)} candidates, zero delay: {result['burst']['generations_per_second']}"
        f" generations/s ({elapsed:.2f} s)"
    )
    print(f"recorded in {path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--single", type=int, default=20)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    asyncio.run(main(args.single, args.batch, args.concurrency))
