"""Account endpoints under /api/auth."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request, Response, status

from flowstudio.auth.schemas import (
    Credentials,
    LanguageBody,
    LoginBody,
    SessionRead,
    TokenCreate,
    TokenCreated,
    TokenList,
    TokenRead,
    UserRead,
)
from flowstudio.auth.service import SignedIn
from flowstudio.deps import SESSION_COOKIE, ContextDep, CurrentUser, PrincipalDep, SessionDep
from flowstudio.errors import problem_responses
from flowstudio.i18n import locales

router = APIRouter(prefix="/api/auth", tags=["auth"])


def _set_session_cookie(
    response: Response, ctx: ContextDep, signed_in: SignedIn, request: Request
) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        signed_in.session_token,
        max_age=int(ctx.settings.session_days * 86400),
        httponly=True,
        samesite="lax",
        secure=ctx.settings.secure_cookies or request.url.scheme == "https",
        path="/",
    )


def _set_language_cookie(
    response: Response, ctx: ContextDep, language: str | None, request: Request
) -> None:
    """The pages follow the language stored with the account on every device it signs in on."""
    if language:
        response.set_cookie(
            locales.COOKIE,
            language,
            max_age=365 * 86400,
            samesite="lax",
            secure=ctx.settings.secure_cookies or request.url.scheme == "https",
            path="/",
        )


def _client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


@router.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    response_model=SessionRead,
    responses=problem_responses(
        (403, "registration_closed"), (409, "email_taken: sign in instead"), 422
    ),
)
async def register(
    body: Credentials, request: Request, response: Response, db: SessionDep, ctx: ContextDep
) -> SessionRead:
    # A new account keeps the language its pages were shown in.
    language = locales.supported(request.cookies.get(locales.COOKIE))
    signed_in = await ctx.auth.register(
        db, email=body.email, password=body.password, language=language
    )
    _set_session_cookie(response, ctx, signed_in, request)
    return SessionRead(
        user=UserRead.model_validate(signed_in.user), csrf_token=signed_in.csrf_token
    )


@router.post(
    "/login",
    response_model=SessionRead,
    responses=problem_responses((401, "invalid_credentials: wrong email or password"), 422, 429),
)
async def login(
    body: LoginBody, request: Request, response: Response, db: SessionDep, ctx: ContextDep
) -> SessionRead:
    signed_in = await ctx.auth.login(
        db,
        email=body.email,
        password=body.password,
        client=_client_address(request),
        previous_token=request.cookies.get(SESSION_COOKIE),
    )
    _set_session_cookie(response, ctx, signed_in, request)
    _set_language_cookie(response, ctx, signed_in.user.language, request)
    return SessionRead(
        user=UserRead.model_validate(signed_in.user), csrf_token=signed_in.csrf_token
    )


@router.post(
    "/logout", status_code=status.HTTP_204_NO_CONTENT, responses=problem_responses(401, 403)
)
async def logout(
    request: Request, response: Response, principal: PrincipalDep, db: SessionDep, ctx: ContextDep
) -> Response:
    await ctx.auth.logout(
        db, user_id=principal.user.id, session_token=request.cookies.get(SESSION_COOKIE)
    )
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/me", response_model=SessionRead, responses=problem_responses(401))
async def me(principal: PrincipalDep, ctx: ContextDep) -> SessionRead:
    return SessionRead(
        user=UserRead.model_validate(principal.user), csrf_token=ctx.auth.csrf_token(principal)
    )


@router.put(
    "/me/language",
    response_model=UserRead,
    responses=problem_responses(401, 403, 422),
)
async def set_language(
    body: LanguageBody,
    request: Request,
    response: Response,
    user: CurrentUser,
    db: SessionDep,
    ctx: ContextDep,
) -> UserRead:
    """The pages' language for this account, on every device (and a cookie for this one)."""
    updated = await ctx.auth.set_language(db, user=user, language=body.language)
    _set_language_cookie(response, ctx, body.language, request)
    return UserRead.model_validate(updated)


@router.post(
    "/tokens",
    status_code=status.HTTP_201_CREATED,
    response_model=TokenCreated,
    responses=problem_responses(401, 403, 422),
)
async def create_token(
    body: TokenCreate, user: CurrentUser, db: SessionDep, ctx: ContextDep
) -> TokenCreated:
    api_token, token = await ctx.auth.create_api_token(db, user=user, name=body.name)
    return TokenCreated(
        id=api_token.id, name=api_token.name, token=token, created_at=api_token.created_at
    )


@router.get("/tokens", response_model=TokenList, responses=problem_responses(401))
async def list_tokens(user: CurrentUser, db: SessionDep, ctx: ContextDep) -> TokenList:
    tokens = await ctx.auth.list_api_tokens(db, user=user)
    return TokenList(items=[TokenRead.model_validate(t) for t in tokens])


@router.delete(
    "/tokens/{token_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problem_responses(401, 403, (404, "not_found: no such token (or not yours)"), 422),
)
async def revoke_token(
    token_id: uuid.UUID, user: CurrentUser, db: SessionDep, ctx: ContextDep
) -> Response:
    await ctx.auth.revoke_api_token(db, user=user, token_id=token_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
