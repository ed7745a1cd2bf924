"""Liveness and readiness probes."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from sqlalchemy import text

from flowstudio.deps import ContextDep
from flowstudio.errors import ServiceUnavailable, problem_responses

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get(
    "/readyz", responses=problem_responses((503, "unavailable: database or storage unreachable"))
)
async def readyz(ctx: ContextDep) -> dict[str, str]:
    """The database and the object store answer."""
    problems = []
    try:
        async with asyncio.timeout(5):
            async with ctx.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
    except Exception:  # any failure here means "not ready", reported as such
        problems.append("database")
    try:
        async with asyncio.timeout(5):
            await ctx.store.check()
    except Exception:
        problems.append("storage")
    if problems:
        raise ServiceUnavailable(
            f"Not ready: {', '.join(problems)} unreachable.", headers={"Retry-After": "5"}
        )
    return {"status": "ready"}
