"""A lost database connection is a 503 the client can retry, not a 500."""

from __future__ import annotations

import asyncpg.exceptions
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import exc as sa

from flowstudio.errors import install_error_handlers


def _invalidated() -> sa.DBAPIError:
    try:
        raise asyncpg.exceptions.ConnectionDoesNotExistError(
            "connection was closed in the middle of operation"
        )
    except asyncpg.exceptions.ConnectionDoesNotExistError as cause:
        return sa.DBAPIError("INSERT ...", {}, cause, connection_invalidated=True)


def _wrapped_reset() -> RuntimeError:
    try:
        raise ConnectionResetError(104, "Connection reset by peer")
    except ConnectionResetError as cause:
        error = RuntimeError("commit failed")
        error.__cause__ = cause
        return error


FAILURES = {
    "refused": lambda: ConnectionRefusedError(111, "Connection refused"),
    "invalidated": _invalidated,
    "pool-timeout": lambda: sa.TimeoutError("QueuePool limit reached"),
    "wrapped-reset": _wrapped_reset,
}


@pytest.fixture
def failing_app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/api/fail/{kind}")
    async def fail(kind: str) -> None:
        if kind == "bug":
            raise RuntimeError("a real bug")
        if kind == "integrity":
            raise sa.IntegrityError("INSERT ...", {}, Exception("duplicate key"))
        raise FAILURES[kind]()

    return app


@pytest.mark.parametrize("kind", sorted(FAILURES))
async def test_database_unreachable_is_503_database_unavailable(failing_app, kind):
    transport = httpx.ASGITransport(app=failing_app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        response = await http.get(f"/api/fail/{kind}")
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["retry-after"] == "5"
    body = response.json()
    assert body["code"] == "database_unavailable"
    assert "Try again" in body["detail"]


@pytest.mark.parametrize("kind", ["bug", "integrity"])
async def test_other_errors_stay_500(failing_app, kind):
    transport = httpx.ASGITransport(app=failing_app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        response = await http.get(f"/api/fail/{kind}")
    assert response.status_code == 500
    assert response.json()["code"] == "internal_error"
