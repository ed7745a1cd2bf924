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
from sqlalchemy import select

from bench.common import record, served
from flowstudio.generations.models import Generation
from flowstudio.imaging import THUMBNAIL_MAX_SIDE, process_image
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
    with Image.open(io.BytesIO(data)) as image:
        thumb = image.convert("RGB")
        thumb.thumbnail(
            (THUMBNAIL_MAX_SIDE, THUMBNAIL_MAX_SIDE), Image.Resampling.BILINEAR, reducing_gap=2.0
        )
    thumb.save(io.BytesIO(), format="WEBP", quality=80, method=0)


def timed(fn, *args, repeat: int = 30) -> float:  # type: ignore[no-untyped-def]
    fn(*args)
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn(*args)
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


async def run(count: int, concurrency: int, image: bytes) -> dict:
    async with served(worker_concurrency=concurrency, per_user_concurrency=concurrency) as (
        base,
        app,
    ):
        app.state.ctx.providers.register(PreparedProvider(image), replace=True)
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
            while True:
                async with app.state.ctx.sessions() as db:
                    rows = list(await db.scalars(select(Generation).where(Generation.id.in_(ids))))
                if all(r.status in ("succeeded", "failed") for r in rows):
                    break
                await asyncio.sleep(0.05)
            elapsed = time.perf_counter() - start
    failed = [r for r in rows if r.status != "succeeded"]
    timings = [r.output["timings"] for r in rows if r.status == "succeeded"]

    def median(key: str) -> float:
        return round(statistics.median(t[key] for t in timings), 2)

    # Database time: what the row's own clock saw beyond the worker's measured stages.
    db_ms = [
        (r.finished_at - r.started_at).total_seconds() * 1000 - r.output["timings"]["total_ms"]
        for r in rows
        if r.status == "succeeded"
    ]
    return {
        "generations": len(rows),
        "failed": len(failed),
        "seconds": round(elapsed, 3),
        "generations_per_second": round(len(rows) / elapsed, 1),
        "worker_concurrency": concurrency,
        "per_generation_ms": {
            "provider_handoff": median("provider_ms"),
            "hash_dimensions_thumbnail": median("processing_ms"),
            "object_puts": median("storage_ms"),
            "inputs": median("inputs_ms"),
            "worker_total": median("total_ms"),
            "database_writes": round(statistics.median(db_ms), 2),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=1)
    args = parser.parse_args()
    image = prepared_png()
    thumb_ms = timed(thumbnail_only, image)
    processing_ms = timed(process_image, image)
    result = asyncio.run(run(args.count, args.concurrency, image))
    per = result["per_generation_ms"]
    bookkeeping = per["worker_total"] + per["database_writes"]
    result.update(
        {
            "png_bytes": len(image),
            "thumbnail_alone_ms": round(thumb_ms, 2),
            "process_image_alone_ms": round(processing_ms, 2),
            "bookkeeping_ms": round(bookkeeping, 2),
            "bookkeeping_over_thumbnail": round(bookkeeping / thumb_ms, 2),
            "target_ratio": 1.3,
        }
    )
    path = record("pipeline", result)
    print(
        f"{result['generations']} candidates ({result['failed']} failed), "
        f"{result['generations_per_second']} generations/s with {args.concurrency} job(s) at once"
    )
    print(f"thumbnail work alone: {thumb_ms:.2f} ms; process_image alone: {processing_ms:.2f} ms")
    for key, value in per.items():
        print(f"  {key:>26}: {value} ms")
    print(
        f"bookkeeping per generation {bookkeeping:.2f} ms = "
        f"{result['bookkeeping_over_thumbnail']} × thumbnail (target ≤ 1.3)"
    )
    print(f"recorded in {path}")


if __name__ == "__main__":
    main()
