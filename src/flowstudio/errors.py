"""The AppError tree and the handlers that render every error as RFC 9457 problem details."""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM_JSON = "application/problem+json"


class AppError(Exception):
    """A domain error that knows its HTTP status and stable machine code."""

    status: int = 400
    code: str = "bad_request"
    title: str = "Bad request"

    def __init__(
        self,
        detail: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        self.detail = detail or self.title
        self.headers = headers or {}
        self.extra = extra
        super().__init__(self.detail)


class Unauthenticated(AppError):
    status, code, title = 401, "unauthenticated", "Sign in required"


class InvalidCredentials(AppError):
    status, code, title = 401, "invalid_credentials", "Wrong email or password"


class CsrfFailed(AppError):
    status, code, title = 403, "csrf_failed", "Missing or wrong CSRF token"


class MethodNotAllowed(AppError):
    status, code, title = 405, "method_not_allowed", "Method not allowed"


class NotFound(AppError):
    status, code, title = 404, "not_found", "Not found"


class Conflict(AppError):
    status, code, title = 409, "conflict", "Conflict"


class EmailTaken(AppError):
    status, code, title = 409, "email_taken", "That email already has an account"


class RegistrationClosed(AppError):
    status, code, title = 403, "registration_closed", "Registration is closed on this server"


class StepNotReady(AppError):
    status, code, title = 409, "step_not_ready", "An input step has no adopted image yet"


class NotAdoptable(AppError):
    status, code, title = 409, "not_adoptable", "Only a finished, kept generation can be adopted"


class ValidationFailed(AppError):
    status, code, title = 422, "validation_error", "The request is not valid"


class InvalidCursor(AppError):
    status, code, title = 400, "invalid_cursor", "The cursor is not valid"


class PayloadTooLarge(AppError):
    status, code, title = 413, "payload_too_large", "The upload is too large"


class UnsupportedMedia(AppError):
    status, code, title = 415, "unsupported_media_type", "Not an image FlowStudio can store"


class RateLimitedError(AppError):
    status, code, title = 429, "rate_limited", "Too many attempts"


class QueueFull(AppError):
    status, code, title = 429, "queue_full", "Too many generations are waiting"


class ServiceUnavailable(AppError):
    status, code, title = 503, "unavailable", "The service is not ready"


class DatabaseUnavailable(AppError):
    status, code, title = 503, "database_unavailable", "The database is unreachable"


class FieldProblem(BaseModel):
    field: str = Field(description="Dotted path of the offending field ('' for the whole request).")
    message: str


class Problem(BaseModel):
    """RFC 9457 problem details: the body of every error response, with a stable ``code``."""

    # Some problems carry more members (e.g. step_not_ready's `waiting_for`).
    model_config = ConfigDict(extra="allow")

    type: str = Field(description="A URI naming the problem type.")
    title: str
    status: int
    detail: str = Field(description="What went wrong here, and what to do next.")
    code: str = Field(description="Stable machine code: not_found, validation_error, ...")
    instance: str | None = Field(None, description="The path of the request.")
    errors: list[FieldProblem] | None = Field(
        None, description="validation_error: what is wrong, field by field."
    )


PROBLEM_DESCRIPTIONS = {
    400: "invalid_cursor: the cursor was not issued by this server for this list",
    401: "unauthenticated: no valid session cookie or API token",
    403: "csrf_failed: a session-cookie request without the right X-CSRF-Token header",
    404: "not_found: no such resource, or it belongs to someone else",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error: the request does not fit the schema",
    429: "rate_limited: too many attempts; see Retry-After. queue_full: too many of your "
    "generations are waiting (`pending`, `limit`)",
    503: "unavailable: the service is not ready. database_unavailable: the database (or D1) "
    "did not answer; nothing was half-written, retry after Retry-After",
}


def problem_responses(*statuses: int | tuple[int, str]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` for error statuses: ``problem_responses(401, 404, (409, "why"))``.

    Each is documented as ``application/problem+json`` with the :class:`Problem` schema (see
    :func:`install_problem_openapi`)."""
    responses: dict[int | str, dict[str, Any]] = {}
    for item in statuses:
        status, description = item if isinstance(item, tuple) else (item, None)
        responses[status] = {
            "model": Problem,
            "description": description or PROBLEM_DESCRIPTIONS.get(status, "error"),
        }
    return responses


def declare_problem_responses(schema: dict[str, Any]) -> dict[str, Any]:
    """Every 4xx/5xx response of ``schema`` becomes ``application/problem+json`` / ``Problem``.

    FastAPI would declare error models as ``application/json``, and its own default 422 as
    ``HTTPValidationError``; this API sends neither."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    problem = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(problem.pop("$defs", {}))
    # Always sent (null when there is no request path), so required for generated clients.
    problem["required"] = [*problem.get("required", []), "instance"]
    components["Problem"] = problem
    reference = {"schema": {"$ref": "#/components/schemas/Problem"}}
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            for status, response in operation.get("responses", {}).items():
                if str(status)[:1] in ("4", "5"):
                    response["content"] = {PROBLEM_JSON: reference}
    # FastAPI's own validation models, unless something still refers to them.
    for name in ("HTTPValidationError", "ValidationError"):
        model = components.pop(name, None)
        if model is not None and f'"#/components/schemas/{name}"' in json.dumps(schema):
            components[name] = model
    return schema


def problem_response(
    *,
    status: int,
    code: str,
    title: str,
    detail: str,
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": f"https://flowstudio.dev/problems/{code}",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
    }
    body["instance"] = instance
    if extra:
        body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


_HTTP_CODES = {
    400: ("bad_request", "Bad request"),
    401: ("unauthenticated", "Sign in required"),
    403: ("forbidden", "Not allowed"),
    404: ("not_found", "Not found"),
    405: ("method_not_allowed", "Method not allowed"),
    406: ("not_acceptable", "Not acceptable"),
    413: ("payload_too_large", "The request is too large"),
    415: ("unsupported_media_type", "Unsupported media type"),
    422: ("validation_error", "The request is not valid"),
    429: ("rate_limited", "Too many requests"),
}


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    errors = []
    for error in exc.errors():
        location = [str(part) for part in error.get("loc", ()) if part != "body"]
        errors.append({"field": ".".join(location), "message": error.get("msg", "invalid")})
    return errors


def _connection_error_types() -> tuple[type[BaseException], ...]:
    import asyncpg.exceptions
    from sqlalchemy import exc as sa

    return (
        ConnectionError,
        sa.TimeoutError,  # no pooled connection came free: the database does not answer
        asyncpg.exceptions.ConnectionDoesNotExistError,
        asyncpg.exceptions.CannotConnectNowError,
    )


def database_unreachable(exc: BaseException) -> bool:
    """Whether `exc` (or what caused it) means the database connection is lost or refused."""
    from sqlalchemy import exc as sa

    lost = _connection_error_types()
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, lost):
            return True
        if isinstance(current, sa.DBAPIError) and current.connection_invalidated:
            return True
        current = current.__cause__ or current.__context__
    return False


def install_error_handlers(app: FastAPI, *, html_handler: Any = None) -> None:
    """Render every error as problem+json (API) — or, for page requests, via ``html_handler``."""

    def wants_html(request: Request) -> bool:
        return (
            html_handler is not None
            and not request.url.path.startswith("/api/")
            and "text/html" in request.headers.get("accept", "")
        )

    @app.exception_handler(AppError)
    async def _app_error(request: Request, exc: AppError):  # type: ignore[no-untyped-def]
        if wants_html(request):
            return await html_handler(request, exc.status, exc.code, exc.detail)
        return problem_response(
            status=exc.status,
            code=exc.code,
            title=exc.title,
            detail=exc.detail,
            instance=request.url.path,
            headers=exc.headers,
            extra=exc.extra,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):  # type: ignore[no-untyped-def]
        errors = _validation_errors(exc)
        detail = "; ".join(f"{e['field'] or 'request'}: {e['message']}" for e in errors[:5])
        return problem_response(
            status=422,
            code="validation_error",
            title="The request is not valid",
            detail=detail or "The request is not valid",
            instance=request.url.path,
            extra={"errors": errors},
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):  # type: ignore[no-untyped-def]
        if exc.status_code == 400 and not wants_html(request):
            # Only the framework raises a bare 400: a body it could not parse (not UTF-8, a
            # broken multipart form). Invalid JSON is already a validation_error; so is this.
            return problem_response(
                status=422,
                code="validation_error",
                title="The request is not valid",
                detail="body: could not be parsed; send UTF-8 JSON, or a multipart form.",
                instance=request.url.path,
                extra={"errors": [{"field": "body", "message": "could not be parsed"}]},
            )
        code, title = _HTTP_CODES.get(exc.status_code, ("error", "Error"))
        if wants_html(request):
            return await html_handler(request, exc.status_code, code, title)
        detail = exc.detail if isinstance(exc.detail, str) and exc.detail else title
        if exc.status_code == 404:
            detail = "There is nothing at this address."
        return problem_response(
            status=exc.status_code,
            code=code,
            title=title,
            detail=detail,
            instance=request.url.path,
            headers=getattr(exc, "headers", None),
        )

    async def _database_unreachable(request: Request, exc: Exception):  # type: ignore[no-untyped-def]
        # Not a bug: the database is restarting or out of reach, so the request's work was
        # (almost certainly) not committed; the client may retry, and /readyz says the same.
        import logging

        logging.getLogger("flowstudio").warning(
            "database unreachable on %s: %s", request.url.path, exc
        )
        unavailable = DatabaseUnavailable(
            "The database is unreachable. Try again in a few seconds; with the same "
            "Idempotency-Key a retry never creates the work twice.",
            headers={"Retry-After": "5"},
        )
        return await _app_error(request, unavailable)

    async def _maybe_unreachable(request: Request, exc: Exception):  # type: ignore[no-untyped-def]
        if database_unreachable(exc):
            return await _database_unreachable(request, exc)
        raise exc  # a real error: the handler of last resort below logs it

    from sqlalchemy.exc import DBAPIError

    for connection_error in (*_connection_error_types(), DBAPIError):
        app.add_exception_handler(connection_error, _maybe_unreachable)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):  # type: ignore[no-untyped-def]
        # Logged with its traceback by the server; the client only learns that it failed.
        import logging

        if database_unreachable(exc):
            return await _database_unreachable(request, exc)
        logging.getLogger("flowstudio").exception("unhandled error on %s", request.url.path)
        if wants_html(request):
            return await html_handler(request, 500, "internal_error", "Something went wrong")
        return problem_response(
            status=500,
            code="internal_error",
            title="Internal error",
            detail="Something went wrong on the server; it has been logged. Try again.",
            instance=request.url.path,
        )
