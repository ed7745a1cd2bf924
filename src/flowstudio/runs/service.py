"""Runs of flows: starting, reading, deleting, and the adoption state machine of their steps.

Adopting a different candidate for step S — or clearing S — removes the adoptions of every step
downstream of S (transitively), because their inputs changed under them.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from flowstudio.auth.models import User
from flowstudio.db import utcnow
from flowstudio.errors import NotAdoptable, NotFound, ValidationFailed
from flowstudio.flows import FlowDefinition, FlowRegistry, RunInputError, UnknownFlow, UnknownStep
from flowstudio.generations import repository as generations_repo
from flowstudio.generations.events import Event, EventBus
from flowstudio.generations.models import Generation, GenerationStatus
from flowstudio.generations.schemas import to_read
from flowstudio.i18n import locales
from flowstudio.pagination import CursorCodec, Position
from flowstudio.runs import repository
from flowstudio.runs.models import Run, RunStep
from flowstudio.runs.schemas import RunRead, StepRead

RUN_NOT_FOUND = "No such run."


def flow_of(run: Run) -> FlowDefinition:
    """The flow as it was when the run started."""
    return FlowDefinition.from_snapshot(run.flow_snapshot)


def step_of(run: Run, step_id: str) -> Any:
    try:
        return flow_of(run).step(step_id)
    except UnknownStep:
        raise NotFound(f"This run's flow has no step '{step_id}'.") from None


def _default_title(flow: FlowDefinition, inputs: dict[str, str]) -> str:
    """The flow's title (in the current language: the bundled flows' are in the catalogue) and
    the first input given."""
    first = next((value for value in inputs.values() if value), "")
    flow_title = locales.gettext(flow.title)
    separator = "：" if locales.current() != "en" else ": "
    title = f"{flow_title}{separator}{first}" if first else flow_title
    return title if len(title) <= 200 else title[:199] + "…"


async def start_run(
    db: AsyncSession,
    *,
    flows: FlowRegistry,
    user: User,
    flow_slug: str,
    inputs: dict[str, Any],
    title: str | None,
) -> Run:
    try:
        flow = flows.get(flow_slug)
    except UnknownFlow:
        raise NotFound(f"No flow '{flow_slug}'; GET /api/flows lists them.") from None
    try:
        values = flow.validate_run_inputs(inputs)
    except RunInputError as exc:
        raise ValidationFailed(
            str(exc),
            errors=[{"field": f"inputs.{e['field']}", "message": e["message"]} for e in exc.errors],
        ) from None
    now = utcnow()
    run = Run(
        user_id=user.id,
        flow_slug=flow.slug,
        flow_snapshot=flow.snapshot(),
        title=(title or "").strip() or _default_title(flow, values),
        inputs=values,
        created_at=now,
        updated_at=now,
    )
    db.add(run)
    await db.flush()
    db.add_all(RunStep(run_id=run.id, step_id=step.id, updated_at=now) for step in flow.steps)
    await db.flush()
    return run


async def get_owned_run(
    db: AsyncSession, *, user: User, run_id: uuid.UUID, for_update: bool = False
) -> Run:
    run = await repository.get_owned_run(db, user_id=user.id, run_id=run_id, for_update=for_update)
    if run is None:
        raise NotFound(RUN_NOT_FOUND)
    return run


async def adopted_generations(db: AsyncSession, run: Run) -> dict[str, Generation]:
    """Each step's adopted generation (only live, succeeded ones count)."""
    steps = await repository.steps_of_runs(db, [run.id])
    ids = [s.adopted_generation_id for s in steps if s.adopted_generation_id]
    by_id = {g.id: g for g in await generations_repo.get_by_ids(db, ids)}
    result = {}
    for step in steps:
        generation = by_id.get(step.adopted_generation_id) if step.adopted_generation_id else None
        if generation is not None and generation.deleted_at is None:
            result[step.step_id] = generation
    return result


async def describe_runs(db: AsyncSession, runs: Sequence[Run]) -> list[RunRead]:
    """Runs with their steps' adoption, counts and readiness, in a fixed number of queries."""
    run_ids = [run.id for run in runs]
    run_steps = {(s.run_id, s.step_id): s for s in await repository.steps_of_runs(db, run_ids)}
    adopted_ids = [s.adopted_generation_id for s in run_steps.values() if s.adopted_generation_id]
    adopted = {g.id: g for g in await generations_repo.get_by_ids(db, adopted_ids)}
    counts = await generations_repo.status_counts(db, run_ids)
    described = []
    for run in runs:
        flow = flow_of(run)
        adopted_by_step: dict[str, Generation] = {}
        for step in flow.steps:
            run_step = run_steps.get((run.id, step.id))
            generation = (
                adopted.get(run_step.adopted_generation_id)
                if run_step and run_step.adopted_generation_id
                else None
            )
            if generation is not None:
                adopted_by_step[step.id] = generation
        steps = []
        for step in flow.steps:
            run_step = run_steps.get((run.id, step.id))
            generation = adopted_by_step.get(step.id)
            step_counts = counts.get((run.id, step.id), {})
            waiting = [s for s in step.inputs if s not in adopted_by_step]
            steps.append(
                StepRead(
                    id=step.id,
                    title=step.title,
                    kind=str(getattr(step.kind, "value", step.kind)),
                    inputs=list(step.inputs),
                    prompt_template=step.prompt,
                    provider=step.provider,
                    model=step.model,
                    temperature=step.temperature,
                    width=step.width,
                    height=step.height,
                    adopted_generation_id=generation.id if generation else None,
                    adopted=to_read(generation, adopted=True) if generation else None,
                    candidate_counts={
                        s.value: step_counts.get(s.value, 0) for s in GenerationStatus
                    },
                    candidates=sum(step_counts.values()),
                    ready=not waiting,
                    waiting_for=waiting,
                    invalidated_at=run_step.invalidated_at if run_step else None,
                )
            )
        described.append(
            RunRead(
                id=run.id,
                flow=run.flow_slug,
                flow_title=flow.title,
                title=run.title,
                inputs=run.inputs,
                created_at=run.created_at,
                updated_at=run.updated_at,
                steps=steps,
            )
        )
    return described


async def list_runs(
    db: AsyncSession,
    *,
    user: User,
    codec: CursorCodec,
    cursor: str | None,
    limit: int,
    flow_slug: str | None = None,
) -> tuple[list[RunRead], str | None]:
    after = codec.decode(cursor, scope="runs") if cursor else None
    runs = await repository.list_runs(
        db, user_id=user.id, after=after, limit=limit + 1, flow_slug=flow_slug
    )
    next_cursor = None
    if len(runs) > limit:
        runs = runs[:limit]
        last = runs[-1]
        next_cursor = codec.encode(Position(last.created_at, last.id), scope="runs")
    return await describe_runs(db, runs), next_cursor


# -- adoption ---------------------------------------------------------------------------------


async def _invalidate_downstream(
    db: AsyncSession, *, run: Run, step_id: str, now: datetime
) -> list[str]:
    downstream = flow_of(run).downstream_of(step_id)
    return await repository.invalidate_steps(db, run_id=run.id, step_ids=downstream, now=now)


async def _emit_adoption(
    db: AsyncSession,
    bus: EventBus | None,
    *,
    run: Run,
    step_id: str,
    generation_id: uuid.UUID | None,
    invalidated: list[str],
) -> None:
    """An `adoption` event tells other tabs and instances that the run's adoptions changed."""
    if bus is None:
        return
    body = {
        "run_id": str(run.id),
        "step_id": step_id,
        "adopted_generation_id": str(generation_id) if generation_id else None,
        "invalidated_steps": invalidated,
    }
    await bus.emit(db, Event.of("adoption", body, run_id=run.id, user_id=run.user_id))


async def adopt_candidate(
    db: AsyncSession,
    *,
    user: User,
    run_id: uuid.UUID,
    step_id: str,
    generation_id: uuid.UUID,
    bus: EventBus | None = None,
) -> tuple[Generation, list[str]]:
    # Locking the run row serializes concurrent adoptions within a run (PostgreSQL); SQLite
    # transactions are already serialized by BEGIN IMMEDIATE.
    run = await get_owned_run(db, user=user, run_id=run_id, for_update=True)
    step_of(run, step_id)
    found = await generations_repo.get_owned(db, user_id=user.id, generation_id=generation_id)
    if found is None or found[0].run_id != run.id or found[0].step_id != step_id:
        raise NotFound("No such candidate in this run and step.")
    generation, already_adopted = found
    if generation.status != GenerationStatus.SUCCEEDED.value or not generation.object_key:
        raise NotAdoptable(
            f"This candidate is {generation.status}; only a succeeded candidate can be adopted."
        )
    now = utcnow()
    invalidated: list[str] = []
    if not already_adopted:
        await repository.set_adoption(
            db, run_id=run.id, step_id=step_id, generation_id=generation.id, now=now
        )
        await repository.touch_run(db, run.id, now)
        # Last, as it answers (RETURNING): on D1 it carries the writes above in one batch.
        invalidated = await _invalidate_downstream(db, run=run, step_id=step_id, now=now)
        await _emit_adoption(
            db, bus, run=run, step_id=step_id, generation_id=generation.id, invalidated=invalidated
        )
    return generation, invalidated


async def clear_adoption(
    db: AsyncSession,
    *,
    user: User,
    run_id: uuid.UUID,
    step_id: str,
    bus: EventBus | None = None,
) -> list[str]:
    run = await get_owned_run(db, user=user, run_id=run_id, for_update=True)
    step_of(run, step_id)
    run_step = await repository.get_run_step(db, run.id, step_id)
    now = utcnow()
    invalidated: list[str] = []
    if run_step is not None and run_step.adopted_generation_id is not None:
        await repository.set_adoption(
            db, run_id=run.id, step_id=step_id, generation_id=None, now=now
        )
        await repository.touch_run(db, run.id, now)
        # Last, as it answers (RETURNING): on D1 it carries the writes above in one batch.
        invalidated = await _invalidate_downstream(db, run=run, step_id=step_id, now=now)
        await _emit_adoption(
            db, bus, run=run, step_id=step_id, generation_id=None, invalidated=invalidated
        )
    return invalidated


async def release_adoptions_of(
    db: AsyncSession,
    *,
    generation_ids: Sequence[uuid.UUID],
    runs: dict[uuid.UUID, Run],
    bus: EventBus | None = None,
) -> dict[uuid.UUID, list[str]]:
    """Deleted generations lose their adoption; their downstream steps are invalidated.

    Returns, per released generation, the steps whose adoption was removed (its own first).
    """
    now = utcnow()
    released: dict[uuid.UUID, list[str]] = {}
    for run_step in await repository.steps_adopting(db, generation_ids):
        run = runs.get(run_step.run_id)
        if run is None or run_step.adopted_generation_id is None:
            continue
        generation_id = run_step.adopted_generation_id
        await repository.set_adoption(
            db, run_id=run.id, step_id=run_step.step_id, generation_id=None, now=now
        )
        downstream = await _invalidate_downstream(db, run=run, step_id=run_step.step_id, now=now)
        released[generation_id] = [run_step.step_id, *downstream]
        await _emit_adoption(
            db, bus, run=run, step_id=run_step.step_id, generation_id=None, invalidated=downstream
        )
    return released
