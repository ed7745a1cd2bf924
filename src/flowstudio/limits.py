"""Request body limits, enforced before a body is read.

A body over its route's limit is refused at once when `Content-Length` declares it, and as soon
as the bytes received pass the limit when it does not (chunked): the application never spools
more than the limit, and the answer is 413 problem `payload_too_large` with `Connection: close`,
so the server drops the connection instead of draining the rest.

The framework's own limit (Starlette's RequestBodyLimitMiddleware) counts the same way, but
answers a declared oversize with plain text; every error here is RFC 9457 problem details.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flowstudio.errors import problem_response

JSON_BODY_LIMIT = 1024 * 1024  # every JSON request
_CLOSE = {"Connection": "close"}


def _megabytes(limit: int) -> str:
    return f"{limit / (1024 * 1024):g} MB"


class BodyTooLarge(HTTPException):
    """Raised from `receive` once the count passes the limit. An HTTPException, so that the
    framework re-raises it from its body parsing (it turns other errors there into a 400) and
    the problem handler renders it."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            status_code=413,
            detail=f"The request body is over its limit of {_megabytes(limit)}.",
            headers=_CLOSE,
        )


class BodyLimits:
    """Pure ASGI middleware: `default` bytes for every request, or the limit of the first
    `(method, path pattern, limit)` rule that matches."""

    def __init__(
        self, app: ASGIApp, *, default: int, rules: Sequence[tuple[str, str, int]] = ()
    ) -> None:
        self.app = app
        self.default = default
        self.rules = [(method, re.compile(pattern), limit) for method, pattern, limit in rules]

    def limit_for(self, method: str, path: str) -> int:
        for rule_method, pattern, limit in self.rules:
            if method == rule_method and pattern.fullmatch(path):
                return limit
        return self.default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["method"], scope["path"])
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._refuse(scope, receive, send, limit)
            return
        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except BodyTooLarge:
            if started:
                raise
            await self._refuse(scope, receive, send, limit)

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        response = problem_response(
            status=413,
            code="payload_too_large",
            title="The request is too large",
            detail=f"The request body is over its limit of {_megabytes(limit)}.",
            instance=scope.get("path"),
            headers=_CLOSE,
        )
        await response(scope, receive, send)
