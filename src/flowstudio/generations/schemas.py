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
ModelT = TypeVar("ModelT", bound=BaseModel)


class GenerateResponse(BaseModel):
    generations: list[GenerationRead]


class CandidateList(BaseModel):
    items: list[GenerationRead]
    next_cursor: str | None
    adopted_generation_id: uuid.UUID | None


_set_attribute = object.__setattr__


def _construct(model: type[ModelT], values: dict[str, Any]) -> ModelT:
    """`model.model_construct(**values)` when `values` names every field: what it does, without
    its per-field walk over aliases and defaults (a tenth of its cost; history pages build
    hundreds of these). Only for our own, already-typed values."""
    instance = model.__new__(model)
    _set_attribute(instance, "__dict__", values)
    _set_attribute(instance, "__pydantic_fields_set__", set(values))
    _set_attribute(instance, "__pydantic_extra__", None)
    _set_attribute(instance, "__pydantic_private__", None)
    return instance


def to_read(
    generation: Generation,
    *,
    adopted: bool,
    model: type[ReadT] = GenerationRead,  # type: ignore[assignment]
    **extra: Any,
) -> ReadT:
    """The API view of a generation. Built without re-validation: every value comes from our
    own row, and validating nested models per item was most of a page's cost. (History list
    pages skip models altogether: see history_json, held equal to this by a test.)"""
    asset = None
    if generation.object_key and generation.status == "succeeded":
        base = f"/api/history/{generation.id}"
        asset = _construct(
            AssetRead,
            dict(
                key=generation.object_key,
                mime=generation.mime or "application/octet-stream",
                width=generation.width or 0,
                height=generation.height or 0,
                size_bytes=generation.size_bytes or 0,
                sha256=generation.sha256 or "",
                url=f"{base}/image",
                thumbnail_url=f"{base}/thumbnail",
                download_url=f"{base}/download",
            ),
        )
    error = None
    if generation.error_code:
        error = _construct(
            ErrorRead, {"code": generation.error_code, "message": generation.error_message or ""}
        )
    values = dict(
        id=generation.id,
        run_id=generation.run_id,
        step_id=generation.step_id,
        flow=generation.flow_slug,
        batch_id=generation.batch_id,
        batch_index=generation.batch_index,
        source=generation.source,  # type: ignore[arg-type]
        status=generation.status,  # type: ignore[arg-type]
        prompt=generation.prompt,
        params=generation.params,
        temperature=generation.temperature,
        seed=generation.seed,
        provider=generation.provider,
        model=generation.model,
        provider_request_id=generation.provider_request_id,
        error=error,
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
    if values.keys() != model.__pydantic_fields__.keys():
        return model.model_construct(**values)  # defaults left out, or names it does not have
    return _construct(model, values)


def event_payload(generation: Generation, *, adopted: bool = False) -> dict[str, Any]:
    """What a `generation` event carries: the generation as the API shows it, plus its owner."""
    payload = to_read(generation, adopted=adopted).model_dump(mode="json")
    payload["user_id"] = str(generation.user_id)
    return payload


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
