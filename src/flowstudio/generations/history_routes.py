"""The history API under /api/history: list, detail, delete/restore/purge, batch, asset bytes."""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.responses import FileResponse, RedirectResponse, StreamingResponse
from pydantic import BeforeValidator

from flowstudio.db import utcnow
from flowstudio.deps import ContextDep, CurrentUser, LimitDep, SessionDep
from flowstudio.errors import NotFound, ValidationFailed, problem_responses
from flowstudio.generations import history, repository
from flowstudio.generations.repository import HistoryFilters
from flowstudio.generations.routes import parse_statuses
from flowstudio.generations.schemas import (
    BatchDeleteBody,
    BatchDeleteResult,
    DeleteResult,
    HistoryItem,
    HistoryList,
)
from flowstudio.i18n.search import Term, search_terms
from flowstudio.imaging import STORED_TYPES, extension_for
from flowstudio.storage import ObjectNotFound

router = APIRouter(prefix="/api/history", tags=["history"])

NOT_FOUND = (404, "not_found: no such generation (or not yours)")
SIGNED_URL_LIFETIME = timedelta(minutes=5)


_NUMBER = re.compile(r"\s*[+-]?\d+(?:\.\d*)?\s*")


def _not_a_number(value: Any) -> Any:
    # pydantic would read "0" or "1700000000.5" as Unix time; the parameter is ISO 8601 only.
    if isinstance(value, str) and _NUMBER.fullmatch(value):
        raise ValueError("expected an ISO 8601 date-time with zone, e.g. 2026-01-31T00:00:00Z")
    return value


IsoDatetime = Annotated[datetime, BeforeValidator(_not_a_number)]


def _aware(value: datetime | None, name: str) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValidationFailed(
            f"{name} needs a timezone, e.g. 2026-01-31T00:00:00Z.",
            errors=[{"field": name, "message": "timezone required"}],
        )
    return value


@router.get(
    "",
    response_model=HistoryList,
    responses=problem_responses(400, 401, 422),
)
async def list_history(
    user: CurrentUser,
    ctx: ContextDep,
    limit: LimitDep,
    flow: str | None = Query(None, max_length=64),
    run_id: uuid.UUID | None = None,
    step_id: str | None = Query(None, max_length=64),
    status_filter: str | None = Query(
        None, alias="status", max_length=100, description="One status or several, comma-separated."
    ),
    q: str | None = Query(
        None,
        max_length=200,
        description="Words in the prompt, each matched as a prefix; a run of Chinese, Japanese "
        "or Korean characters matches where it stands in the prompt. Case, width, accents and "
        "Simplified/Traditional Chinese do not matter.",
    ),
    since: IsoDatetime | None = Query(
        None, description="Created at or after (ISO 8601, with zone)."
    ),
    until: IsoDatetime | None = Query(None, description="Created before (ISO 8601, with zone)."),
    adopted: bool | None = None,
    deleted: bool = Query(False, description="true: the trash instead of the live history."),
    cursor: str | None = Query(None, max_length=512),
) -> Response:
    terms: tuple[Term, ...] = ()
    if q is not None and q.strip():
        terms = tuple(search_terms(q))
        if not terms:
            raise ValidationFailed(
                "The search has no words to look for.",
                errors=[{"field": "q", "message": "no searchable words"}],
            )
    filters = HistoryFilters(
        flow=flow or None,
        run_id=run_id,
        step_id=step_id or None,
        statuses=tuple(parse_statuses(status_filter)),
        since=_aware(since, "since"),
        until=_aware(until, "until"),
        adopted=adopted,
        terms=terms,
        deleted=deleted,
    )
    page = await history.list_history(
        ctx.reads,
        user=user,
        codec=ctx.cursors,
        filters=filters,
        cursor=cursor,
        limit=limit,
        trash_days=ctx.settings.trash_days,
    )
    # Already the JSON of a HistoryList (the declared response model, kept for the schema).
    return Response(page, media_type="application/json")


@router.post(
    "/delete", response_model=BatchDeleteResult, responses=problem_responses(401, 403, 422)
)
async def delete_many(
    body: BatchDeleteBody, user: CurrentUser, db: SessionDep, ctx: ContextDep
) -> BatchDeleteResult:
    deleted, not_found = await history.delete_generations(
        db, bus=ctx.bus, store=ctx.store, user=user, ids=body.ids, purge=body.purge
    )
    return BatchDeleteResult(deleted=[d.generation.id for d in deleted], not_found=not_found)


@router.get(
    "/{generation_id}",
    response_model=HistoryItem,
    responses=problem_responses(401, NOT_FOUND, 422),
)
async def get_generation(
    generation_id: uuid.UUID, user: CurrentUser, db: SessionDep, ctx: ContextDep
) -> HistoryItem:
    return await history.get_item(
        db, user=user, generation_id=generation_id, trash_days=ctx.settings.trash_days
    )


@router.delete(
    "/{generation_id}",
    response_model=DeleteResult,
    responses=problem_responses(401, 403, NOT_FOUND, 422),
)
async def delete_generation(
    generation_id: uuid.UUID,
    user: CurrentUser,
    db: SessionDep,
    ctx: ContextDep,
    purge: bool = Query(False, description="Remove the row and its images now (no undo)."),
) -> DeleteResult:
    deleted, _ = await history.delete_generations(
        db, bus=ctx.bus, store=ctx.store, user=user, ids=[generation_id], purge=purge
    )
    if not deleted:
        raise NotFound(history.NOT_FOUND)
    [result] = deleted
    deleted_at = result.generation.deleted_at or utcnow()
    return DeleteResult(
        id=generation_id,
        deleted_at=deleted_at,
        purge_after=None
        if result.purged
        else history.purge_after(deleted_at, ctx.settings.trash_days),
        purged=result.purged,
        invalidated_steps=result.invalidated_steps,
    )


@router.post(
    "/{generation_id}/restore",
    response_model=HistoryItem,
    responses=problem_responses(401, 403, NOT_FOUND, 422),
)
async def restore_generation(
    generation_id: uuid.UUID, user: CurrentUser, db: SessionDep, ctx: ContextDep
) -> HistoryItem:
    return await history.restore_generation(
        db, bus=ctx.bus, user=user, generation_id=generation_id, trash_days=ctx.settings.trash_days
    )


# -- asset bytes ---------------------------------------------------------------------------------

AssetKind = Literal["image", "thumbnail", "download"]
ASSET_RESPONSES = {
    **problem_responses(
        401, (404, "not_found: no such generation (or not yours), or it has no image"), 422
    ),
    200: {
        "content": {mime: {} for mime in sorted(STORED_TYPES)},
        "description": "the bytes (local storage)",
    },
    302: {"description": "a short-lived signed URL (S3 / R2 storage)"},
    304: {"description": "not modified (If-None-Match)"},
}


async def _serve_asset(
    kind: AssetKind,
    generation_id: uuid.UUID,
    request: Request,
    user: CurrentUser,
    db: SessionDep,
    ctx: ContextDep,
) -> Response:
    found = await repository.get_owned(
        db, user_id=user.id, generation_id=generation_id, include_deleted=True
    )
    if found is None:
        raise NotFound(history.NOT_FOUND)
    generation, _ = found
    if generation.status != "succeeded" or not generation.object_key:
        raise NotFound(f"This generation has no image (it is {generation.status}).")
    if kind == "thumbnail":
        key, mime = generation.thumbnail_key or generation.object_key, "image/webp"
        etag = f'"{generation.sha256}-thumb"'
    else:
        key, mime = generation.object_key, generation.mime or "application/octet-stream"
        etag = f'"{generation.sha256}"'
    # Keys embed the generation id and its bytes never change: cache privately for long.
    headers = {"ETag": etag, "Cache-Control": "private, max-age=31536000, immutable"}
    filename = None
    if kind == "download":
        stamp = generation.created_at.strftime("%Y%m%d-%H%M%S")
        ext = extension_for(mime)
        filename = (
            f"{generation.flow_slug}-{generation.step_id}-{stamp}-{str(generation.id)[:8]}.{ext}"
        )
        headers["Cache-Control"] = "private, no-cache"
    if etag in request.headers.get("if-none-match", "").replace(" ", "").split(","):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)

    path_for = getattr(ctx.store, "path_for", None)
    if path_for is not None:
        path = path_for(key)
        if not path.is_file():
            raise NotFound("The image is missing from storage.")
        return FileResponse(
            path,
            media_type=mime,
            headers=headers,
            filename=filename,
            content_disposition_type="attachment" if filename else "inline",
        )
    if filename is None:
        url = await ctx.store.signed_get_url(key, expires_in=SIGNED_URL_LIFETIME, content_type=mime)
        if url is not None:
            return RedirectResponse(
                url,
                status_code=status.HTTP_302_FOUND,
                headers={"Cache-Control": "private, no-store"},
            )
    # Downloads stream through us so the file keeps its name (signed URLs cannot set it here).
    try:
        info = await ctx.store.head(key)
    except ObjectNotFound:
        raise NotFound("The image is missing from storage.") from None
    headers["Content-Length"] = str(info.size)
    if filename:
        headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return StreamingResponse(ctx.store.open_stream(key), media_type=mime, headers=headers)


@router.get("/{generation_id}/image", responses=ASSET_RESPONSES, response_class=Response)
async def image(
    generation_id: uuid.UUID, request: Request, user: CurrentUser, db: SessionDep, ctx: ContextDep
) -> Response:
    return await _serve_asset("image", generation_id, request, user, db, ctx)


@router.get("/{generation_id}/thumbnail", responses=ASSET_RESPONSES, response_class=Response)
async def thumbnail(
    generation_id: uuid.UUID, request: Request, user: CurrentUser, db: SessionDep, ctx: ContextDep
) -> Response:
    return await _serve_asset("thumbnail", generation_id, request, user, db, ctx)


@router.get("/{generation_id}/download", responses=ASSET_RESPONSES, response_class=Response)
async def download(
    generation_id: uuid.UUID, request: Request, user: CurrentUser, db: SessionDep, ctx: ContextDep
) -> Response:
    return await _serve_asset("download", generation_id, request, user, db, ctx)
