"""Generation pipeline cost: what FlowStudio spends per candidate besides the image itself.

    uv run python -m bench.pipeline [--count 500] [--concurrency 1]

A zero-delay provider hands back one prepared 1024×1024 PNG. The script measures generations per
second end to end (request → `succeeded`, in-process, SQLite + local store) and splits the
per-generation cost recorded by the worker (provider handoff, hashing + dimensions + thumbnail,
object puts, database writes), next to the thumbnail work alone (decode, resize, WebP encode).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import time
import uuid

import httpx
from PIL import Image
from sqlalchemy import func, select

from bench.common import record, served
from flowstudio.generations.models import Generation
from flowstudio.imaging import make_thumbnail, process_image
from flowstudio.providers import GenerationResult, LocalProvider


def prepared_png() -> bytes:
    """A detailed 1024×1024 PNG, drawn once by the local renderer."""
    provider = LocalProvider()
    from flowstudio.providers import GenerationRequest

    result = asyncio.run(
        provider.generate(
            GenerationRequest(
                prompt="a detailed harbour at night",
                model="local-sketch",
                width=1024,
                height=1024,
                seed=7,
                temperature=1.2,
            )
        )
    )
    return result.image


class PreparedProvider(LocalProvider):
    """Answers at once with the same bytes: the pipeline is all that is left to measure."""

    def __init__(self, image: bytes) -> None:
        super().__init__()
        self.image = image

    async def generate(self, request):  # type: ignore[no-untyped-def]
        return GenerationResult(
            image=self.image,
            mime="image/png",
            model=request.model,
            provider_request_id=f"prepared-{uuid.uuid4().hex[:8]}",
        )


def thumbnail_only(data: bytes) -> None:
    """Decode, shrink and encode: the pipeline's own thumbnail code, without anything around it."""
    with Image.open(io.BytesIO(data)) as image:
        make_thumbnail(image)


def timed(fn, data: bytes, samples: list[float], repeat: int = 15) -> None:  # type: ignore[no-untyped-def]
    fn(data)
    for _ in range(repeat):
        start = time.perf_counter()
        fn(data)
        samples.append((time.perf_counter() - start) * 1000)


async def run(count: int, concurrency: int, image_processes: int | None, image: bytes) -> dict:
    overrides = {"worker_concurrency": concurrency, "per_user_concurrency": concurrency}
    if image_processes is not None:
        overrides["image_processes"] = image_processes
    async with served(**overrides) as (base, app):
        app.state.ctx.providers.register(PreparedProvider(image), replace=True)
        image_processes_used = app.state.worker.images.processes
        async with httpx.AsyncClient(base_url=base, timeout=120) as http:
            response = await http.post(
                "/api/auth/register",
                json={"email": "bench@example.com", "password": "bench-password"},
            )
            headers = {"X-CSRF-Token": response.json()["csrf_token"]}
            run_ = (await http.post("/api/flows/quick/runs", json={}, headers=headers)).json()
            url = f"/api/runs/{run_['id']}/steps/image/generate"
            start = time.perf_counter()
            ids = []
            for _ in range(count // 4):
                answer = await http.post(url, json={"count": 4}, headers=headers)
                ids.extend(uuid.UUID(g["id"]) for g in answer.json()["generations"])
            # A count, not the rows: loading 500 rows every 50 ms would compete with the worker
            # for the interpreter and be measured as pipeline cost.
            done = select(func.count()).where(
                Generation.id.in_(ids), Generation.status.in_(("succeeded", "failed"))
            )
            while True:
                async with app.state.ctx.sessions() as db:
                    if await db.scalar(done) == len(ids):
                        break
                await asyncio.sleep(0.05)
            elapsed = time.perf_counter() - start
            async with app.state.ctx.sessions() as db:
                rows = list(await db.scalars(select(Generation).where(Generation.id.in_(ids))))
    failed = [r for r in rows if r.status != "succeeded"]
    succeeded = [r for r in rows if r.status == "succeeded"]
    timings = [r.output["timings"] for r in succeeded]

    def median(key: str) -> float:
        return round(statistics.median(t[key] for t in timings), 2)

    # Wall time per generation in the steady state: the span of the middle 80 % of finishes over
    # the generations finished in it. Unlike the stages the worker records, it holds everything:
    # the claim and finish transactions, the event loop's hops, the bench's own requests.
    finishes = sorted(r.finished_at for r in succeeded)
    lo, hi = len(finishes) // 10, len(finishes) - 1 - len(finishes) // 10
    wall_ms = (finishes[hi] - finishes[lo]).total_seconds() * 1000 / (hi - lo)
    stages = {
        "provider_handoff": median("provider_ms"),
        "hash_dimensions_thumbnail": median("processing_ms"),
        "object_puts": median("storage_ms"),
        "inputs": median("inputs_ms"),
        "worker_total": median("total_ms"),
    }
    return {
        "generations": len(rows),
        "failed": len(failed),
        "seconds": round(elapsed, 3),
        "generations_per_second": round(len(rows) / elapsed, 1),
        "worker_concurrency": concurrency,
        "image_processes": image_processes_used,
        "per_generation_ms": {
            **stages,
            # One job at a time: what the wall time holds beyond the worker's stages (claim,
            # finish, hand-offs). With several at once the stages overlap and this is not defined.
            "database_and_handoffs": round(wall_ms - stages["worker_total"], 2)
            if concurrency == 1
            else None,
            "wall": round(wall_ms, 2),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument(
        "--concurrency", default="1,4", help="jobs a worker runs at once; a comma list runs each"
    )
    parser.add_argument(
        "--image-processes",
        type=int,
        default=None,
        help="FLOWSTUDIO_IMAGE_PROCESSES for the run (default: the setting's default)",
    )
    args = parser.parse_args()
    image = prepared_png()
    # The reference is sampled before, between and after the runs: the machine's speed drifts.
    thumb_samples: list[float] = []
    processing_samples: list[float] = []
    runs = []
    for concurrency in (int(c) for c in args.concurrency.split(",")):
        timed(thumbnail_only, image, thumb_samples)
        timed(process_image, image, processing_samples)
        runs.append(asyncio.run(run(args.count, concurrency, args.image_processes, image)))
    timed(thumbnail_only, image, thumb_samples)
    timed(process_image, image, processing_samples)
    thumb_ms = statistics.median(thumb_samples)
    processing_ms = statistics.median(processing_samples)
    for result in runs:
        wall = result["per_generation_ms"]["wall"]
        result["wall_over_thumbnail"] = round(wall / thumb_ms, 2)
    path = record(
        "pipeline",
        {
            "png_bytes": len(image),
            "thumbnail_alone_ms": round(thumb_ms, 2),
            "process_image_alone_ms": round(processing_ms, 2),
            "target_ratio": 1.3,
            "runs": runs,
        },
    )
    print(f"thumbnail work alone: {thumb_ms:.2f} ms; process_image alone: {processing_ms:.2f} ms")
    for result in runs:
        print(
            f"{result['generations']} candidates ({result['failed']} failed), "
            f"{result['generations_per_second']} generations/s with "
            f"{result['worker_concurrency']} job(s) at once, "
            f"image processes: {result['image_processes']}"
        )
        for key, value in result["per_generation_ms"].items():
            if value is not None:
                print(f"  {key:>26}: {value} ms")
        print(f"  wall per generation = {result['wall_over_thumbnail']} × thumbnail (target ≤ 1.3)")
    print(f"recorded in {path}")


if __name__ == "__main__":
    main()
