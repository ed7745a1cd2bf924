"""Generating candidates, listing and uploading them, and the run's live event stream."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator

from fastapi import APIRouter, File, Header, Query, Request, Response, UploadFile, status
from fastapi.responses import StreamingResponse

from flowstudio.deps import ContextDep, CurrentUser, LimitDep, SessionDep
from flowstudio.errors import ValidationFailed, problem_responses
from flowstudio.generations import repository, service
from flowstudio.generations.events import RECONNECT, RESYNC
from flowstudio.generations.models import GenerationStatus
from flowstudio.generations.schemas import (
    CandidateList,
    GenerateBody,
    GenerateResponse,
    GenerationRead,
    to_read,
)
from flowstudio.runs import service as runs_service

router = APIRouter(prefix="/api/runs/{run_id}", tags=["generations"])

MAX_WAIT_SECONDS = 60.0
KEEPALIVE_SECONDS = 15.0
_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*(\d+(?:\.\d+)?)", re.IGNORECASE)


def parse_prefer_wait(prefer: str | None) -> float | None:
    if not prefer:
        return None
    match = _WAIT.search(prefer)
    return min(float(match.group(1)), MAX_WAIT_SECONDS) if match else None


def parse_statuses(raw: str | None) -> list[str]:
    if not raw:
        return []
    statuses = [s.strip() for s in raw.split(",") if s.strip()]
    unknown = [s for s in statuses if s not in service.STATUSES]
    if unknown:
        raise ValidationFailed(
            f"Unknown status {', '.join(unknown)}; use {', '.join(service.STATUSES)}.",
            errors=[{"field": "status", "message": f"unknown status {s!r}"} for s in unknown],
        )
    return statuses


@router.post(
    "/steps/{step_id}/generate",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=GenerateResponse,
    responses={
        200: {
            "description": "Prefer: wait=N and every generation finished in time",
            "model": GenerateResponse,
        },
        **problem_responses(
            401,
            403,
            (404, "not_found: no such run or step (or not yours)"),
            (409, "step_not_ready, or idempotency_key_reused"),
            422,
            (429, "queue_full: too many of your generations are waiting (`pending`, `limit`)"),
        ),
    },
)
async def generate(
    run_id: uuid.UUID,
    step_id: str,
    body: GenerateBody,
    response: Response,
    user: CurrentUser,
    db: SessionDep,
    ctx: ContextDep,
    idempotency_key: str | None = Header(None, alias="Idempotency-Key"),
    prefer: str | None = Header(None),
) -> GenerateResponse:
    found = await service.request_generations(
        db,
        bus=ctx.bus,
        user=user,
        run_id=run_id,
        step_id=step_id,
        body=body,
        idempotency_key=idempotency_key,
        max_pending=ctx.settings.max_pending_per_user,
    )
    ids = [g.id for g, _ in found]
    wait = parse_prefer_wait(prefer)
    if wait:
        # The wait needs the rows visible to the worker: this request's work is done, commit it.
        await db.commit()
        await service.wait_for_terminal(
            ctx.sessions, bus=ctx.bus, run_id=run_id, ids=ids, timeout=wait
        )
        response.headers["Preference-Applied"] = f"wait={wait:g}"
        found = await repository.get_many_with_adoption(db, ids)
    if wait and all(GenerationStatus(g.status).is_terminal for g, _ in found):
        response.status_code = status.HTTP_200_OK
    return GenerateResponse(generations=[to_read(g, adopted=a) for g, a in found])


@router.get(
    "/steps/{step_id}/assets",
    response_model=CandidateList,
    responses=problem_responses(400, 401, (404, "not_found: no such run or step"), 422),
)
async def list_assets(
    run_id: uuid.UUID,
    step_id: str,
    user: CurrentUser,
    db: SessionDep,
    ctx: ContextDep,
    limit: LimitDep,
    status_filter: str | None = Query(
        None, alias="status", max_length=100, description="One status or several, comma-separated."
    ),
    cursor: str | None = Query(None, max_length=512),
) -> CandidateList:
    rows, next_cursor, adopted_id = await service.list_candidates(
        db,
        user=user,
        codec=ctx.cursors,
        run_id=run_id,
        step_id=step_id,
        statuses=parse_statuses(status_filter),
        cursor=cursor,
        limit=limit,
    )
    return CandidateList(
        items=[to_read(g, adopted=a) for g, a in rows],
        next_cursor=next_cursor,
        adopted_generation_id=adopted_id,
    )


@router.post(
    "/steps/{step_id}/assets",
    status_code=status.HTTP_201_CREATED,
    response_model=GenerationRead,
    responses={
        200: {
            "description": "the same image was already a candidate here",
            "model": GenerationRead,
        },
        **problem_responses(401, 403, (404, "not_found: no such run or step"), 413, 415, 422),
    },
)
async def upload_asset(
    run_id: uuid.UUID,
    step_id: str,
    response: Response,
    user: CurrentUser,
    db: SessionDep,
    ctx: ContextDep,
    file: UploadFile = File(...),
) -> GenerationRead:
    data = await file.read(service.MAX_UPLOAD_BYTES + 1)
    generation, created = await service.upload_candidate(
        db,
        bus=ctx.bus,
        store=ctx.store,
        user=user,
        run_id=run_id,
        step_id=step_id,
        data=data,
        filename=file.filename,
    )
    if not created:
        response.status_code = status.HTTP_200_OK
    found = await repository.get_owned(db, user_id=user.id, generation_id=generation.id)
    return to_read(generation, adopted=bool(found and found[1]))


@router.get(
    "/events",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/event-stream": {}},
            "description": "one `generation` event per status change (the generation as "
            "JSON) and an `adoption` event when a step's adoption changes",
        },
        **problem_responses(401, (404, "not_found: no such run (or not yours)"), 422),
    },
)
async def run_events(
    run_id: uuid.UUID, request: Request, user: CurrentUser, db: SessionDep, ctx: ContextDep
) -> StreamingResponse:
    await runs_service.get_owned_run(db, user=user, run_id=run_id)
    subscription = ctx.bus.subscribe(run_id)
    user_id = str(user.id)

    async def stream() -> AsyncIterator[bytes]:
        try:
            yield b": connected\nretry: 2000\n\n"
            while True:
                event = await subscription.get(timeout=KEEPALIVE_SECONDS)
                if event is None:
                    if await request.is_disconnected():
                        return
                    yield b": keepalive\n\n"
                    continue
                if event is RESYNC or event is RECONNECT:
                    yield event.sse
                    if event is RECONNECT:
                        return  # the process is stopping; the page connects again
                    continue
                if event.user_id == user_id:
                    yield event.sse
        except asyncio.CancelledError:
            raise
        finally:
            subscription.close()

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
