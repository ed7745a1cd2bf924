"""Request and response bodies for runs, steps and adoption."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from flowstudio.generations.schemas import GenerationRead


class RunCreate(BaseModel):
    inputs: dict[str, Any] = Field(default_factory=dict, description="The flow's run inputs.")
    title: str | None = Field(None, max_length=200, description="Default: from the inputs.")


class StepRead(BaseModel):
    id: str
    title: str
    kind: str
    inputs: list[str] = Field(description="Steps whose adopted image feeds this one.")
    prompt_template: str
    provider: str
    model: str
    temperature: float
    width: int
    height: int
    adopted_generation_id: uuid.UUID | None
    adopted: GenerationRead | None
    candidate_counts: dict[str, int] = Field(description="Live candidates by status.")
    candidates: int
    ready: bool = Field(description="Every input step has an adopted image.")
    waiting_for: list[str] = Field(description="Input steps without an adoption.")
    invalidated_at: datetime | None = Field(
        description="When an upstream change removed this step's adoption (until re-adopted)."
    )


class RunRead(BaseModel):
    id: uuid.UUID
    flow: str
    flow_title: str
    title: str
    inputs: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    steps: list[StepRead]


class RunList(BaseModel):
    items: list[RunRead]
    next_cursor: str | None


class AdoptBody(BaseModel):
    generation_id: uuid.UUID


class AdoptResult(BaseModel):
    adopted_generation_id: uuid.UUID
    adopted_key: str
    invalidated_steps: list[str]


class ClearResult(BaseModel):
    # Always sent: required (and nullable) in the published response schema.
    model_config = ConfigDict(json_schema_serialization_defaults_required=True)

    adopted_generation_id: None = None
    invalidated_steps: list[str]


class RunDeleted(BaseModel):
    id: uuid.UUID
    deleted_at: datetime
    generations_deleted: int
