"""Request and response bodies for generations (candidates and history)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from flowstudio.generations.models import Generation

Status = Literal["pending", "running", "succeeded", "failed", "canceled"]


class GenerateBody(BaseModel):
    count: int = Field(1, ge=1, le=4, description="Candidates to generate (1x, 3x …), at most 4.")
    temperature: float | None = Field(None, ge=0, le=2, description="Default: the step's.")
    seed: int | None = Field(
        None, ge=0, le=2**53, description="Candidate i gets seed + i; random when omitted."
    )
    prompt: str | None = Field(
        None, min_length=1, max_length=4000, description="Replaces the step's rendered template."
    )


class ErrorRead(BaseModel):
    code: str
    message: str


class AssetRead(BaseModel):
    key: str
    mime: str
    width: int
    height: int
    size_bytes: int
    sha256: str
    url: str
    thumbnail_url: str
    download_url: str


class GenerationRead(BaseModel):
    id: uuid.UUID
    run_id: uuid.UUID
    step_id: str
    flow: str
    batch_id: uuid.UUID
    batch_index: int
    source: Literal["generated", "upload"]
    status: Status
    prompt: str
    params: dict[str, Any]
    temperature: float | None
    seed: int | None
    provider: str
    model: str
    provider_request_id: str | None
    error: ErrorRead | None
    asset: AssetRead | None
    output: dict[str, Any]
    attempts: int
    adopted: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    deleted_at: datetime | None


ReadT = TypeVar("ReadT", bound=GenerationRead)


class GenerateResponse(BaseModel):
    generations: list[GenerationRead]


class CandidateList(BaseModel):
    items: list[GenerationRead]
    next_cursor: str | None
    adopted_generation_id: uuid.UUID | None


def asset_values(
    generation_id: str,
    *,
    object_key: str,
    mime: str | None,
    width: int | None,
    height: int | None,
    size_bytes: int | None,
    sha256: str | None,
) -> dict[str, Any]:
    """The fields of `AssetRead`: the one place a generation's asset URLs are made (the typed
    view below and the list pages' fast path in history_json both call it)."""
    base = f"/api/history/{generation_id}"
    return {
        "key": object_key,
        "mime": mime or "application/octet-stream",
        "width": width or 0,
        "height": height or 0,
        "size_bytes": size_bytes or 0,
        "sha256": sha256 or "",
        "url": f"{base}/image",
        "thumbnail_url": f"{base}/thumbnail",
        "download_url": f"{base}/download",
    }


def error_values(code: str | None, message: str | None) -> dict[str, str] | None:
    """The fields of `ErrorRead`, or None for a generation without an error."""
    return {"code": code, "message": message or ""} if code else None


def to_read(
    generation: Generation,
    *,
    adopted: bool,
    model: type[ReadT] = GenerationRead,  # type: ignore[assignment]
    **extra: Any,
) -> ReadT:
    """The API view of a generation: the one builder of its public shape. Built without
    re-validation (`model_construct`): every value comes from our own typed row. History list
    pages write the same document straight from untyped rows (history_json); a test holds
    the two byte-equal."""
    asset = None
    if generation.object_key and generation.status == "succeeded":
        asset = AssetRead.model_construct(
            **asset_values(
                str(generation.id),
                object_key=generation.object_key,
                mime=generation.mime,
                width=generation.width,
                height=generation.height,
                size_bytes=generation.size_bytes,
                sha256=generation.sha256,
            )
        )
    error = error_values(generation.error_code, generation.error_message)
    return model.model_construct(
        id=generation.id,
        run_id=generation.run_id,
        step_id=generation.step_id,
        flow=generation.flow_slug,
        batch_id=generation.batch_id,
        batch_index=generation.batch_index,
        source=generation.source,
        status=generation.status,
        prompt=generation.prompt,
        params=generation.params,
        temperature=generation.temperature,
        seed=generation.seed,
        provider=generation.provider,
        model=generation.model,
        provider_request_id=generation.provider_request_id,
        error=ErrorRead.model_construct(**error) if error else None,
        asset=asset,
        output=generation.output or {},
        attempts=generation.attempts,
        adopted=adopted,
        created_at=generation.created_at,
        started_at=generation.started_at,
        finished_at=generation.finished_at,
        updated_at=generation.updated_at,
        deleted_at=generation.deleted_at,
        **extra,
    )


class HistoryItem(GenerationRead):
    # Always sent: required (and nullable) in the published response schema.
    model_config = ConfigDict(json_schema_serialization_defaults_required=True)

    run_title: str | None
    step_title: str | None
    flow_title: str | None
    purge_after: datetime | None = Field(
        None, description="When a deleted generation is removed for good."
    )


class HistoryList(BaseModel):
    items: list[HistoryItem]
    next_cursor: str | None


class DeleteResult(BaseModel):
    id: uuid.UUID
    deleted_at: datetime
    purge_after: datetime | None
    purged: bool
    invalidated_steps: list[str] = Field(
        description="Steps of the run whose adoption this removed (its own and downstream)."
    )


class BatchDeleteBody(BaseModel):
    ids: list[uuid.UUID] = Field(min_length=1, max_length=500)
    purge: bool = False


class BatchDeleteResult(BaseModel):
    deleted: list[uuid.UUID]
    not_found: list[uuid.UUID]
