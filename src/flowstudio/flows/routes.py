"""Flow definitions over HTTP (read-only; flows are files)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict

from flowstudio.deps import ContextDep, CurrentUser
from flowstudio.errors import NotFound, problem_responses
from flowstudio.flows.definitions import FlowDefinition
from flowstudio.flows.registry import UnknownFlow

router = APIRouter(prefix="/api/flows", tags=["flows"])


class FlowRead(BaseModel):
    slug: str
    title: str
    description: str
    inputs: list[dict[str, Any]]
    steps: list[dict[str, Any]]


class FlowList(BaseModel):
    # Always sent: required (and nullable) in the published response schema.
    model_config = ConfigDict(json_schema_serialization_defaults_required=True)

    items: list[FlowRead]
    next_cursor: str | None = None


def to_read(flow: FlowDefinition) -> FlowRead:
    data = flow.snapshot()
    steps = []
    for step in data["steps"]:
        steps.append({**step, "downstream": flow.downstream_of(step["id"])})
    return FlowRead(
        slug=flow.slug,
        title=flow.title,
        description=flow.description,
        inputs=data["inputs"],
        steps=steps,
    )


@router.get("", response_model=FlowList, responses=problem_responses(401))
async def list_flows(_user: CurrentUser, ctx: ContextDep) -> FlowList:
    return FlowList(items=[to_read(flow) for flow in ctx.flows.all()])


@router.get(
    "/{slug}",
    response_model=FlowRead,
    responses=problem_responses(401, (404, "not_found: no such flow")),
)
async def get_flow(slug: str, _user: CurrentUser, ctx: ContextDep) -> FlowRead:
    try:
        return to_read(ctx.flows.get(slug))
    except UnknownFlow:
        raise NotFound(f"No flow '{slug}'.") from None
