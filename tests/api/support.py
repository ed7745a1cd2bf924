"""Shared by the API property tests: the operations of the OpenAPI schema, a seeded two-user
world, snapshots of everything a user owns, and the bridge that lets hypothesis (synchronous)
drive the app on the test's event loop."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
from sqlalchemy import select

from flowstudio.auth.models import ApiToken, User
from flowstudio.generations.models import Generation
from flowstudio.runs.models import Run, RunStep
from tests.fixtures.app import SignedInClient, make_client, sign_up
from tests.fixtures.flows import adopt, generate_ok, png_bytes, start_run

T = TypeVar("T")

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Reachable without credentials on purpose: probes, and the endpoints that start a session.
PUBLIC_OPERATIONS = frozenset(
    {
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("POST", "/api/auth/register"),
        ("POST", "/api/auth/login"),
    }
)
_PATH_PARAM = re.compile(r"{([^}]+)}")


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    path_params: tuple[str, ...]

    @property
    def label(self) -> str:
        return f"{self.method} {self.path}"

    def url(self, values: dict[str, str]) -> str:
        from urllib.parse import quote

        return _PATH_PARAM.sub(lambda m: quote(values[m.group(1)], safe=""), self.path)


def operations(app: Any) -> list[Operation]:
    """Every operation the app documents, in schema order."""
    found = []
    for path, item in app.openapi()["paths"].items():
        for method in item:
            found.append(Operation(method.upper(), path, tuple(_PATH_PARAM.findall(path))))
    return found


def assert_problem(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/problem+json"), response.headers
    body = response.json()
    assert body["status"] == status and body["code"] == code, body
    return body


def call_soon(loop: asyncio.AbstractEventLoop, coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` on ``loop`` (the test's, busy awaiting the calling thread) and wait.

    Hypothesis runs its examples synchronously; the app, its database engine and its worker live
    on the test's event loop, so each example hands its requests over to that loop."""
    return asyncio.run_coroutine_threadsafe(coroutine, loop).result(timeout=120)


# -- a user with a bit of everything ---------------------------------------------------------


@dataclass
class Account:
    """A signed-in user (cookie session + CSRF) who also holds an API token, and their ids."""

    session: SignedInClient
    bearer: httpx.AsyncClient
    user_id: uuid.UUID
    token_id: str
    runs: list[str] = field(default_factory=list)
    deleted_runs: list[str] = field(default_factory=list)
    generations: list[str] = field(default_factory=list)
    run_steps: dict[str, list[str]] = field(default_factory=dict)

    async def aclose(self) -> None:
        await self.session.http.aclose()
        await self.bearer.aclose()


async def seed_account(app: Any, email: str) -> Account:
    """A product-shot run with an adopted, a failed and a trashed candidate; a quick run with an
    upload; a deleted run; an API token."""
    session = await sign_up(app, email)
    response = await session.post("/api/auth/tokens", json={"name": "script"})
    assert response.status_code == 201, response.text
    token = response.json()
    bearer = make_client(app)
    bearer.headers["Authorization"] = f"Bearer {token['token']}"
    account = Account(
        session=session,
        bearer=bearer,
        user_id=uuid.UUID(session.user["id"]),
        token_id=token["id"],
    )

    shot = await start_run(session, product="a brass compass")
    [adopted] = await generate_ok(session, shot["id"], "object")
    assert adopted["status"] == "succeeded", adopted
    await adopt(session, shot["id"], "object", adopted["id"])
    [scene] = await generate_ok(session, shot["id"], "scene")
    [failed] = await generate_ok(session, shot["id"], "object", prompt="x [fail:content_blocked]")
    assert failed["status"] == "failed", failed
    trashed = await session.delete(f"/api/history/{scene['id']}")
    assert trashed.status_code == 200, trashed.text

    quick = await start_run(session, "quick", prompt="a paper boat")
    upload = await session.post(
        f"/api/runs/{quick['id']}/steps/image/assets",
        files={"file": ("boat.png", png_bytes((20, 90, 160)), "image/png")},
    )
    assert upload.status_code == 201, upload.text

    gone = await start_run(session, "quick", prompt="a run that was deleted")
    [gone_generation] = await generate_ok(session, gone["id"], "image")
    deleted = await session.delete(f"/api/runs/{gone['id']}")
    assert deleted.status_code == 200, deleted.text

    account.runs = [shot["id"], quick["id"]]
    account.deleted_runs = [gone["id"]]
    account.generations = [
        adopted["id"],
        scene["id"],
        failed["id"],
        upload.json()["id"],
        gone_generation["id"],
    ]
    account.run_steps = {
        shot["id"]: [step["id"] for step in shot["steps"]],
        quick["id"]: ["image"],
        gone["id"]: ["image"],
    }
    return account


# -- what a user owns, to compare before and after -------------------------------------------


def _rows(result: Any) -> list[tuple]:
    return [tuple(row) for row in result]


async def snapshot(app: Any, user_id: uuid.UUID) -> dict[str, Any]:
    """Every row the user owns (with every column) and every object under their key prefix."""
    ctx = app.state.ctx
    runs, steps, generations = Run.__table__, RunStep.__table__, Generation.__table__
    tokens, users = ApiToken.__table__, User.__table__
    async with ctx.engine.connect() as connection:
        state = {
            "user": _rows(await connection.execute(select(users).where(users.c.id == user_id))),
            "runs": _rows(
                await connection.execute(
                    select(runs).where(runs.c.user_id == user_id).order_by(runs.c.id)
                )
            ),
            "run_steps": _rows(
                await connection.execute(
                    select(steps)
                    .join(runs, runs.c.id == steps.c.run_id)
                    .where(runs.c.user_id == user_id)
                    .order_by(steps.c.run_id, steps.c.step_id)
                )
            ),
            "generations": _rows(
                await connection.execute(
                    select(generations)
                    .where(generations.c.user_id == user_id)
                    .order_by(generations.c.id)
                )
            ),
            # last_used_at moves whenever the owner uses the token, which is not a change to it.
            "api_tokens": _rows(
                await connection.execute(
                    select(*[c for c in tokens.c if c.name != "last_used_at"])
                    .where(tokens.c.user_id == user_id)
                    .order_by(tokens.c.id)
                )
            ),
        }
    objects = [
        (info.key, info.size, info.etag) async for info in ctx.store.list_prefix(f"u/{user_id}/")
    ]
    state["objects"] = sorted(objects)
    return state


def describe_change(before: dict[str, Any], after: dict[str, Any]) -> str:
    changed = [name for name in before if before[name] != after[name]]
    return "; ".join(f"{name}: {before[name]!r} -> {after[name]!r}" for name in changed)
