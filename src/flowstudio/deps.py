"""Request dependencies as short Annotated aliases: SessionDep, CurrentUser, ContextDep, ..."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any

from fastapi import Depends, Query, Request
from sqlalchemy.ext.asyncio import AsyncSession

from flowstudio.auth.models import User
from flowstudio.auth.service import Principal
from flowstudio.context import AppContext
from flowstudio.db import session_scope
from flowstudio.errors import CsrfFailed, Unauthenticated, ValidationFailed
from flowstudio.pagination import DEFAULT_LIMIT, MAX_LIMIT

SESSION_COOKIE = "flowstudio_session"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


# Dependencies are `async def` even when they do not await: FastAPI runs a plain `def`
# dependency in a worker thread, a hop that cost more than the work.
async def get_context(request: Request) -> AppContext:
    return request.app.state.ctx


ContextDep = Annotated[AppContext, Depends(get_context)]


async def get_db(request: Request) -> AsyncIterator[AsyncSession]:
    ctx: AppContext = request.app.state.ctx
    # GET and HEAD only read: their transaction takes no write lock (SQLite) and refuses writes.
    factory = ctx.read_sessions if request.method in SAFE_METHODS else ctx.sessions
    async for session in session_scope(factory):
        yield session


# "function" scope: the transaction commits before the response is sent, so a client that got
# 201 can rely on the row being there.
SessionDep = Annotated[AsyncSession, Depends(get_db, scope="function")]


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


async def optional_principal(request: Request) -> Principal | None:
    """Who sent the request. Not tied to the request's own session: most requests find the
    answer in the principal cache and need no database (a list page then opens none); a
    miss reads it in a short read-only session of its own."""
    ctx: AppContext = request.app.state.ctx
    token = bearer_token(request)
    principal = None
    if token is not None:
        principal = await ctx.auth.principal_from_api_token(ctx.read_sessions, token=token)
        if principal is None:
            raise Unauthenticated("The API token is unknown or revoked.")
    elif cookie := request.cookies.get(SESSION_COOKIE):
        principal = await ctx.auth.principal_from_session(ctx.read_sessions, session_token=cookie)
    if principal is not None and principal.touch_due:
        # Last-use bookkeeping (once every few minutes a principal) in a short write
        # transaction of its own, before the request's own transaction begins.
        async for touch in session_scope(ctx.sessions):
            await ctx.auth.record_use(touch, principal=principal)
    return principal


OptionalPrincipal = Annotated[Principal | None, Depends(optional_principal, scope="function")]


async def require_principal(request: Request, principal: OptionalPrincipal) -> Principal:
    if principal is None:
        raise Unauthenticated(
            "Sign in first, or send an API token as 'Authorization: Bearer <token>'."
        )
    if principal.uses_cookie and request.method not in SAFE_METHODS:
        ctx: AppContext = request.app.state.ctx
        if not ctx.auth.csrf_valid(principal, request.headers.get("x-csrf-token")):
            raise CsrfFailed("Send the X-CSRF-Token header with the csrf_token from /api/auth/me.")
    return principal


PrincipalDep = Annotated[Principal, Depends(require_principal, scope="function")]


async def current_user(principal: PrincipalDep) -> User:
    return principal.user


CurrentUser = Annotated[User, Depends(current_user, scope="function")]


async def page_limit(
    limit: int = Query(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description=f"Page size, 1–{MAX_LIMIT}."),
) -> int:
    return limit


LimitDep = Annotated[int, Depends(page_limit)]


NUL = "\x00"


def _fields_with_nul(value: Any, path: str) -> Iterator[str]:
    if isinstance(value, str):
        if NUL in value:
            yield path
    elif isinstance(value, dict):
        for key, item in value.items():
            name = f"{path}.{key}" if path else str(key)
            yield from ([name] if NUL in str(key) else _fields_with_nul(item, name))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _fields_with_nul(item, f"{path}.{index}" if path else str(index))


async def reject_nul_characters(request: Request) -> None:
    """Refuse U+0000 anywhere in the path, the query or the body (JSON or form), for every route.

    PostgreSQL cannot store it in text or compare text with it (SQLite can): without this, the
    same request would be a 500 on one backend and accepted on the other."""
    fields = [name for name, value in request.path_params.items() if NUL in str(value)]
    fields += [name for name, value in request.query_params.multi_items() if NUL in name + value]
    content_type = request.headers.get("content-type", "")
    try:
        if "json" in content_type:
            fields += _fields_with_nul(await request.json(), "")
        elif content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
            for name, value in (await request.form()).multi_items():
                text = value if isinstance(value, str) else (value.filename or "")
                if NUL in name + text:
                    fields.append(name)
    except Exception:  # noqa: BLE001 — an unreadable body is the route's validation error
        pass
    if fields:
        raise ValidationFailed(
            "Text may not contain the NUL character (U+0000).",
            errors=[{"field": field, "message": "contains U+0000"} for field in fields],
        )
