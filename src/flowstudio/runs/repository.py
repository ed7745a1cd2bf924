"""SQL for runs and run steps."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from flowstudio.pagination import Position
from flowstudio.runs.models import Run, RunStep


async def get_owned_run(
    db: AsyncSession, *, user_id: uuid.UUID, run_id: uuid.UUID, for_update: bool = False
) -> Run | None:
    query = select(Run).where(Run.id == run_id, Run.user_id == user_id, Run.deleted_at.is_(None))
    if for_update:
        query = query.with_for_update()
    return await db.scalar(query)


async def list_runs(
    db: AsyncSession,
    *,
    user_id: uuid.UUID,
    after: Position | None,
    limit: int,
    flow_slug: str | None = None,
) -> list[Run]:
    query = select(Run).where(Run.user_id == user_id, Run.deleted_at.is_(None))
    if flow_slug:
        query = query.where(Run.flow_slug == flow_slug)
    if after is not None:
        query = query.where(tuple_(Run.created_at, Run.id) < tuple_(after.created_at, after.id))
    query = query.order_by(Run.created_at.desc(), Run.id.desc()).limit(limit)
    return list(await db.scalars(query))


async def steps_of_runs(db: AsyncSession, run_ids: Sequence[uuid.UUID]) -> list[RunStep]:
    if not run_ids:
        return []
    return list(await db.scalars(select(RunStep).where(RunStep.run_id.in_(run_ids))))


async def get_run_step(db: AsyncSession, run_id: uuid.UUID, step_id: str) -> RunStep | None:
    return await db.get(RunStep, (run_id, step_id))


async def set_adoption(
    db: AsyncSession,
    *,
    run_id: uuid.UUID,
    step_id: str,
    generation_id: uuid.UUID | None,
    now: datetime,
) -> None:
    await db.execute(
        update(RunStep)
        .where(RunStep.run_id == run_id, RunStep.step_id == step_id)
        .values(adopted_generation_id=generation_id, invalidated_at=None, updated_at=now)
    )


async def invalidate_steps(
    db: AsyncSession, *, run_id: uuid.UUID, step_ids: Sequence[str], now: datetime
) -> list[str]:
    """Clear the adoptions of these steps; returns the ones that had an adoption."""
    if not step_ids:
        return []
    result = await db.execute(
        update(RunStep)
        .where(
            RunStep.run_id == run_id,
            RunStep.step_id.in_(step_ids),
            RunStep.adopted_generation_id.is_not(None),
        )
        .values(adopted_generation_id=None, invalidated_at=now, updated_at=now)
        .returning(RunStep.step_id)
    )
    return list(result.scalars())


async def steps_adopting(db: AsyncSession, generation_ids: Sequence[uuid.UUID]) -> list[RunStep]:
    if not generation_ids:
        return []
    return list(
        await db.scalars(select(RunStep).where(RunStep.adopted_generation_id.in_(generation_ids)))
    )


async def touch_run(db: AsyncSession, run_id: uuid.UUID, now: datetime) -> None:
    await db.execute(update(Run).where(Run.id == run_id).values(updated_at=now))
