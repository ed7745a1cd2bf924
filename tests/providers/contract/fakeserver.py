"""A scriptable fake HTTP API on 127.0.0.1 for provider contract tests.

The server (Starlette under uvicorn, in a thread of its own, started once per session and
reset before each test) records every request it receives — method, path, query, headers,
raw body and, for multipart bodies, the form fields and files — and answers from routes the
test registers::

    fake.route("POST", "/v1/images/generations", json_reply({...}, headers={...}))
    fake.route("GET", re.compile(r"/v1/predictions/\\w+"), reply_a, reply_b)  # then b forever

A route answers with its replies in order and repeats the last one; a reply is a Starlette
``Response`` or a callable ``(Recorded) -> Response`` (sync or async; it runs on the server's
thread). ``slow(server, seconds, reply)`` waits before answering, and stops waiting early when
the server is reset for the next test or shut down.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import re
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

Reply = Response | Callable[["Recorded"], Response | Awaitable[Response]]


@dataclass
class UploadedFile:
    filename: str | None
    content_type: str | None
    data: bytes


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    form: dict[str, list[str]] = field(default_factory=dict)
    files: dict[str, list[UploadedFile]] = field(default_factory=dict)

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";", 1)[0].strip()


@dataclass
class _Route:
    method: str
    path: str | re.Pattern[str]
    replies: list[Reply]
    calls: int = 0

    def matches(self, method: str, path: str) -> bool:
        if method != self.method:
            return False
        if isinstance(self.path, re.Pattern):
            return self.path.fullmatch(path) is not None
        return path == self.path

    def next_reply(self) -> Reply:
        reply = self.replies[min(self.calls, len(self.replies) - 1)]
        self.calls += 1
        return reply


class FakeServer:
    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.url = ""
        self.port = 0
        #: Bumped by reset() and stop(); pending slow replies give up when it changes.
        self.generation = 0
        self._routes: list[_Route] = []
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def route(self, method: str, path: str | re.Pattern[str], *replies: Reply) -> None:
        if not replies:
            raise ValueError("a route needs at least one reply")
        self._routes.insert(0, _Route(method.upper(), path, list(replies)))

    def reset(self) -> None:
        self.generation += 1
        self._routes = []
        self.requests = []

    def requests_to(self, path: str, method: str | None = None) -> list[Recorded]:
        return [
            r
            for r in list(self.requests)
            if r.path == path and (method is None or r.method == method.upper())
        ]

    def url_for(self, path: str, *, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    # ------------------------------------------------------------------ serving

    async def _endpoint(self, request: Request) -> Response:
        body = await request.body()
        recorded = Recorded(
            method=request.method,
            path=request.url.path,
            query=dict(request.query_params),
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
        )
        if recorded.content_type == "multipart/form-data":
            async with request.form() as form:
                for key, value in form.multi_items():
                    if isinstance(value, str):
                        recorded.form.setdefault(key, []).append(value)
                    else:
                        recorded.files.setdefault(key, []).append(
                            UploadedFile(value.filename, value.content_type, await value.read())
                        )
        self.requests.append(recorded)
        for route in list(self._routes):
            if route.matches(recorded.method, recorded.path):
                reply = route.next_reply()
                if isinstance(reply, Response):
                    return reply
                result = reply(recorded)
                if inspect.isawaitable(result):
                    result = await result
                return result
        return JSONResponse(
            {"error": f"no fake route for {request.method} {request.url.path}"}, 404
        )

    def start(self) -> None:
        app = Starlette(
            routes=[
                Route(
                    "/{path:path}",
                    self._endpoint,
                    methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
                )
            ]
        )
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=0,
            lifespan="off",
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="fake-api", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the fake API server did not start")
            time.sleep(0.005)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.generation += 1
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)


@contextlib.contextmanager
def running_fake_server() -> Iterator[FakeServer]:
    server = FakeServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


# ---------------------------------------------------------------------- replies


def json_reply(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(body, status_code=status, headers=headers)


def raw_reply(
    content: bytes | str,
    status: int = 200,
    content_type: str = "application/json",
    headers: dict[str, str] | None = None,
) -> Response:
    return Response(content, status_code=status, media_type=content_type, headers=headers)


def slow(
    server: FakeServer, seconds: float, reply: Reply
) -> Callable[[Recorded], Awaitable[Response]]:
    """Answer ``reply`` after ``seconds`` (sooner if the server is reset or shut down)."""

    async def handler(recorded: Recorded) -> Response:
        generation = server.generation
        deadline = time.monotonic() + seconds
        # reset() runs on the test's thread, so an asyncio.Event of this loop cannot be used.
        while time.monotonic() < deadline and server.generation == generation:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        if isinstance(reply, Response):
            return reply
        result = reply(recorded)
        return await result if inspect.isawaitable(result) else result

    return handler
