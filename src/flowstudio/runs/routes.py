"""Runs and adoption under /api."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Query, Request, status

from flowstudio.deps import ContextDep, CurrentUser, LimitDep, SessionDep
from flowstudio.errors import problem_responses
from flowstudio.i18n import locales
from flowstudio.runs import service
from flowstudio.runs.schemas import (
    AdoptBody,
    AdoptResult,
    ClearResult,
    RunCreate,
    RunDeleted,
    RunList,
    RunRead,
)

router = APIRouter(prefix="/api", tags=["runs"])

NOT_FOUND = (404, "not_found: no such run or step (or not yours)")


@router.post(
    "/flows/{slug}/runs",
    status_code=status.HTTP_201_CREATED,
    response_model=RunRead,
    responses=problem_responses(401, 403, (404, "not_found: no such flow"), 422),
)
async def start_run(
    slug: str,
    body: RunCreate,
    request: Request,
    user: CurrentUser,
    db: SessionDep,
    ctx: ContextDep,
) -> RunRead:
    # A title made for the run (none given) names the flow in the language of the pages that
    # asked for it; the API's own answers stay in English.
    with locales.using(locales.of_request(request, user.language)):
        run = await service.start_run(
            db, flows=ctx.flows, user=user, flow_slug=slug, inputs=body.inputs, title=body.title
        )
    return (await service.describe_runs(db, [run]))[0]


@router.get("/runs", response_model=RunList, responses=problem_responses(400, 401, 422))
async def list_runs(
    user: CurrentUser,
    db: SessionDep,
    ctx: ContextDep,
    limit: LimitDep,
    cursor: str | None = Query(None, max_length=512),
    flow: str | None = Query(None, max_length=64),
) -> RunList:
    items, next_cursor = await service.list_runs(
        db, user=user, codec=ctx.cursors, cursor=cursor, limit=limit, flow_slug=flow
    )
    return RunList(items=items, next_cursor=next_cursor)


@router.get(
    "/runs/{run_id}", response_model=RunRead, responses=problem_responses(401, NOT_FOUND, 422)
)
async def get_run(run_id: uuid.UUID, user: CurrentUser, db: SessionDep) -> RunRead:
    run = await service.get_owned_run(db, user=user, run_id=run_id)
    return (await service.describe_runs(db, [run]))[0]


@router.delete(
    "/runs/{run_id}",
    response_model=RunDeleted,
    responses=problem_responses(401, 403, NOT_FOUND, 422),
)
async def delete_run(
    run_id: uuid.UUID, user: CurrentUser, db: SessionDep, ctx: ContextDep
) -> RunDeleted:
    from flowstudio.generations import service as generations_service

    deleted_at, count = await generations_service.delete_run(
        db, bus=ctx.bus, user=user, run_id=run_id
    )
    return RunDeleted(id=run_id, deleted_at=deleted_at, generations_deleted=count)


@router.post(
    "/runs/{run_id}/steps/{step_id}/adopt",
    response_model=AdoptResult,
    responses=problem_responses(
        401, 403, NOT_FOUND, (409, "not_adoptable: the candidate is not succeeded"), 422
    ),
)
async def adopt(
    run_id: uuid.UUID,
    step_id: str,
    body: AdoptBody,
    user: CurrentUser,
    db: SessionDep,
    ctx: ContextDep,
) -> AdoptResult:
    generation, invalidated = await service.adopt_candidate(
        db,
        user=user,
        run_id=run_id,
        step_id=step_id,
        generation_id=body.generation_id,
        bus=ctx.bus,
    )
    return AdoptResult(
        adopted_generation_id=generation.id,
        adopted_key=generation.object_key or "",
        invalidated_steps=invalidated,
    )


@router.post(
    "/runs/{run_id}/steps/{step_id}/clear",
    response_model=ClearResult,
    responses=problem_responses(401, 403, NOT_FOUND, 422),
)
async def clear(
    run_id: uuid.UUID, step_id: str, user: CurrentUser, db: SessionDep, ctx: ContextDep
) -> ClearResult:
    invalidated = await service.clear_adoption(
        db, user=user, run_id=run_id, step_id=step_id, bus=ctx.bus
    )
    return ClearResult(invalidated_steps=invalidated)
