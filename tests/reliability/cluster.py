"""FlowStudio as real processes: `serve`, `serve --no-worker` and `worker` subprocesses on free
loopback ports, an API client for them, and a TCP proxy that can cut a dependency off.

Used by the reliability tests and by `bench/scale_out.py`. Every process of a deployment gets
the same `FLOWSTUDIO_*` environment (database, object store, secret, short leases), like the
instances of one real installation.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from flowstudio.config import Settings

# One small step: the image is drawn in a few milliseconds, so the provider delay (a `[slow:N]`
# prompt hook) and FlowStudio's own work dominate, not the renderer.
TINY_FLOW = """\
slug = "tiny"
title = "Tiny"
description = "One small image (reliability tests)."

[[steps]]
id = "image"
title = "Image"
kind = "generate"
prompt = "a small test image"
size = "128x128"
"""

PYCACHE = Path(tempfile.gettempdir()) / "flowstudio-test-pycache"
START_TIMEOUT = 90.0  # a busy 2-core machine can take a while to import and migrate


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Deployment:
    """What every process of one installation shares."""

    root: Path
    database_url: str
    storage: dict[str, str]  # storage_url (+ S3 credentials), as Settings field names
    settings: dict[str, Any] = field(default_factory=dict)  # further Settings overrides

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        flows = self.root / "flows"
        flows.mkdir(exist_ok=True)
        (flows / "tiny.toml").write_text(TINY_FLOW)
        self.values: dict[str, Any] = {
            "data_dir": str(self.root / "data"),
            "database_url": self.database_url,
            "secret_key": "reliability-secret-key-long-enough",
            "flows_dir": str(flows),
            "argon2_time_cost": 1,
            "argon2_memory_cost": 1024,
            "lease_seconds": 2.0,
            "per_user_concurrency": 64,
            **self.storage,
            **self.settings,
        }
        self._names: dict[str, int] = {}

    def env(self, **overrides: Any) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWSTUDIO_")}
        values = {**self.values, **overrides}
        env.update({f"FLOWSTUDIO_{k.upper()}": str(v) for k, v in values.items()})
        env["PYTHONUNBUFFERED"] = "1"
        if env.pop("PYTHONDONTWRITEBYTECODE", None):
            # Without cached bytecode every start compiles FastAPI, SQLAlchemy and Alembic
            # again (seconds of CPU); keep the cache out of the source tree instead.
            env.setdefault("PYTHONPYCACHEPREFIX", str(PYCACHE))
        return env

    def in_process_settings(self, **overrides: Any) -> Settings:
        return Settings(_env_file=None, **{**self.values, **overrides})

    def process(self, kind: str, **overrides: Any) -> FlowStudioProcess:
        """kind: 'web' (serve --no-worker), 'worker', or 'serve' (web + in-process worker)."""
        number = self._names[kind] = self._names.get(kind, 0) + 1
        return FlowStudioProcess(
            kind, self.env(**overrides), self.root / "logs" / f"{kind}-{number}.log"
        )


class FlowStudioProcess:
    """One `flowstudio` subprocess; its output goes to a log file named in every failure."""

    def __init__(self, kind: str, env: dict[str, str], log_path: Path) -> None:
        if kind not in ("web", "worker", "serve"):
            raise ValueError(kind)
        self.kind = kind
        self.env = env
        self.log_path = log_path
        self.port = free_port() if kind != "worker" else None
        self.base_url = f"http://127.0.0.1:{self.port}" if self.port else ""
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        base = [sys.executable, "-m", "flowstudio.cli"]
        if self.kind == "worker":
            return [*base, "worker"]
        serve = [*base, "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        return [*serve, "--no-worker"] if self.kind == "web" else serve

    def start(self) -> FlowStudioProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"--- start {time.strftime('%H:%M:%S')}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.command(), env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def _failure(self, what: str) -> AssertionError:
        return AssertionError(
            f"{self.kind} {what}; last lines of {self.log_path}:\n{self.log_tail()}"
        )

    async def wait_ready(self, timeout: float = START_TIMEOUT) -> FlowStudioProcess:
        """Web: /readyz answers 200. Worker: it printed that it is running."""
        deadline = time.monotonic() + timeout
        marker_seen = self.log_path.stat().st_size if self.log_path.exists() else 0
        async with httpx.AsyncClient(timeout=5) as http:
            while time.monotonic() < deadline:
                if not self.alive:
                    raise self._failure("exited during start")
                if self.kind == "worker":
                    with self.log_path.open("rb") as log:
                        log.seek(marker_seen)
                        if b"is running" in log.read():
                            return self
                else:
                    with contextlib.suppress(httpx.HTTPError):
                        if (await http.get(f"{self.base_url}/readyz")).status_code == 200:
                            return self
                await asyncio.sleep(0.1)
        raise self._failure(f"not ready within {timeout:g} s")

    def kill(self) -> None:
        """SIGKILL: no cleanup, no lease release, like a crash or an OOM kill."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    async def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM and wait (without blocking the event loop); SIGKILL when it hangs."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        self.kill()


class ProcessGroup:
    """Every process a test started, stopped at the end whatever happened."""

    def __init__(self, deployment: Deployment) -> None:
        self.deployment = deployment
        self.processes: list[FlowStudioProcess] = []

    async def start(self, kind: str, *, wait: bool = True, **overrides: Any) -> FlowStudioProcess:
        process = self.deployment.process(kind, **overrides).start()
        self.processes.append(process)
        if wait:
            await process.wait_ready()
        return process

    async def stop_all(self) -> None:
        await asyncio.gather(*(p.stop() for p in self.processes))


class Rotation:
    """`size` processes of one kind that get killed in turn, oldest first. Each is replaced at
    once, so a replacement has `size - 1` rounds to start while the others carry the load."""

    def __init__(self, group: ProcessGroup, kind: str, size: int) -> None:
        self.group = group
        self.kind = kind
        self.size = size
        self.processes: list[FlowStudioProcess] = []
        self._ready: dict[FlowStudioProcess, asyncio.Task[FlowStudioProcess]] = {}
        self.killed = 0

    async def start(self) -> Rotation:
        self.processes = list(
            await asyncio.gather(*(self.group.start(self.kind) for _ in range(self.size)))
        )
        return self

    async def ready(self, offset: int = 0) -> FlowStudioProcess:
        """The process that is `offset` places after the next victim, once it is ready."""
        process = self.processes[offset % self.size]
        task = self._ready.get(process)
        if task is not None:
            await task  # raises if it failed to start
        return process

    def kill_and_replace(self, victim: FlowStudioProcess) -> None:
        victim.kill()
        self.killed += 1
        replacement = self.group.deployment.process(self.kind).start()
        self.group.processes.append(replacement)
        self.processes.remove(victim)
        self.processes.append(replacement)
        self._ready[replacement] = asyncio.create_task(replacement.wait_ready())

    async def all_ready(self) -> None:
        await asyncio.gather(*self._ready.values())


@contextlib.asynccontextmanager
async def process_group(deployment: Deployment) -> AsyncIterator[ProcessGroup]:
    group = ProcessGroup(deployment)
    try:
        yield group
    finally:
        await group.stop_all()


# -- the API, as a script would use it -----------------------------------------------------------


class Api:
    """A user of one web process, authenticated with an API token."""

    def __init__(self, base_url: str, token: str, *, timeout: float = 60.0) -> None:
        self.base_url = base_url
        self.token = token
        # No keep-alive: a request on a connection the server is just closing as idle fails
        # with a ReadError that is no fault of FlowStudio's.
        self.http = httpx.AsyncClient(
            base_url=base_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
            limits=httpx.Limits(max_keepalive_connections=0),
        )

    @classmethod
    async def sign_up(cls, base_url: str, email: str | None = None) -> Api:
        email = email or f"user-{uuid.uuid4().hex[:10]}@example.com"
        async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:
            response = await http.post(
                "/api/auth/register", json={"email": email, "password": "correct horse battery"}
            )
            assert response.status_code == 201, response.text
            csrf = response.json()["csrf_token"]
            response = await http.post(
                "/api/auth/tokens", json={"name": "reliability"}, headers={"X-CSRF-Token": csrf}
            )
            assert response.status_code == 201, response.text
            return cls(base_url, response.json()["token"])

    def at(self, base_url: str) -> Api:
        """The same user talking to another web process."""
        return Api(base_url, self.token)

    async def aclose(self) -> None:
        await self.http.aclose()

    async def start_run(self, flow: str = "tiny") -> str:
        response = await self.http.post(f"/api/flows/{flow}/runs", json={})
        assert response.status_code == 201, response.text
        return response.json()["id"]

    async def generate(
        self,
        run_id: str,
        *,
        prompt: str,
        count: int = 1,
        idempotency_key: str | None = None,
        wait: float | None = None,
        step_id: str = "image",
    ) -> httpx.Response:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        if wait:
            headers["Prefer"] = f"wait={wait:g}"
        return await self.http.post(
            f"/api/runs/{run_id}/steps/{step_id}/generate",
            json={"prompt": prompt, "count": count},
            headers=headers,
        )

    async def events(
        self, run_id: str, sink: list[dict[str, Any]], connected: asyncio.Event
    ) -> None:
        """Append every `generation` event of the run's SSE stream to `sink` until cancelled."""
        import json

        async with self.http.stream(
            "GET", f"/api/runs/{run_id}/events", timeout=httpx.Timeout(10, read=None)
        ) as response:
            assert response.status_code == 200, await response.aread()
            kind = None
            async for line in response.aiter_lines():
                if line.startswith(": connected"):
                    connected.set()
                elif line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: ") and kind == "generation":
                    sink.append(json.loads(line[6:]))


# -- load ------------------------------------------------------------------------------------------

PER_REQUEST = 3  # generations per request, as the "3x" button asks
SUBMITTERS = 4  # requests in flight at once


async def submit(
    apis: list[Api], runs: list[str], count: int, provider_delay: float, tag: str
) -> list[str]:
    """`count` generations in 3x requests, alternating web processes and runs; their ids."""
    ids: list[str] = []
    gate = asyncio.Semaphore(SUBMITTERS)

    async def one(i: int) -> None:
        async with gate:
            response = await apis[i % len(apis)].generate(
                runs[i % len(runs)],
                prompt=f"[slow:{provider_delay:g}] {tag} {i}",
                count=PER_REQUEST,
            )
            assert response.status_code == 202, response.text
            ids.extend(g["id"] for g in response.json()["generations"])

    await asyncio.gather(*(one(i) for i in range(count // PER_REQUEST)))
    return ids


async def wait_terminal(engine: Any, ids: list[str], timeout: float = 300.0) -> None:
    """Until every generation in `ids` is terminal, read straight from the database."""
    from sqlalchemy import func, select

    from flowstudio.generations.models import TERMINAL_STATUSES, Generation

    wanted = [uuid.UUID(i) for i in ids]
    deadline = time.monotonic() + timeout
    done = 0
    while time.monotonic() < deadline:
        async with engine.connect() as connection:
            done = await connection.scalar(
                select(func.count())
                .select_from(Generation)
                .where(Generation.id.in_(wanted), Generation.status.in_(TERMINAL_STATUSES))
            )
        if done == len(wanted):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"only {done} of {len(wanted)} generations finished in {timeout:g} s")


async def run_phase(
    engine: Any, apis: list[Api], runs: list[str], count: int, provider_delay: float, tag: str
) -> tuple[list[str], float]:
    """Submit `count` generations and wait for all; (ids, seconds from first request to last
    terminal row)."""
    started = time.perf_counter()
    ids = await submit(apis, runs, count, provider_delay, tag)
    await wait_terminal(engine, ids)
    return ids, time.perf_counter() - started


# -- a TCP proxy that can fail on demand ---------------------------------------------------------


class TcpProxy:
    """Forwards 127.0.0.1:<port> to an upstream address; `cut()` breaks every connection and
    refuses new ones until `restore()`. With `http=True` it reads HTTP/1.1 requests, and those
    for which `fail_http(method, path)` is true are cut off halfway through their body."""

    def __init__(self, upstream_host: str, upstream_port: int, *, http: bool = False) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.http = http
        self.port = 0
        self.refusing = False
        self.fail_http: Callable[[str, str], bool] | None = None
        self.http_requests_cut = 0
        self.connections_cut = 0
        self._server: asyncio.Server | None = None
        self._links: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def cut(self) -> None:
        """Drop every open connection (RST) and refuse new ones."""
        self.refusing = True
        for client, upstream in list(self._links):
            self.connections_cut += 1
            client.transport.abort()
            upstream.transport.abort()
        self._links.clear()

    def restore(self) -> None:
        self.refusing = False

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        link = (writer, up_writer)
        self._links.add(link)
        forward = self._http_requests if self.http else self._pipe
        try:
            await asyncio.gather(
                forward(reader, up_writer, link), self._pipe(up_reader, writer, link)
            )
        except Exception:  # noqa: BLE001 — a broken link is the point of this class
            pass
        finally:
            self._links.discard(link)
            for w in link:
                w.transport.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        with contextlib.suppress(OSError):
            writer.write_eof()

    async def _http_requests(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link
    ) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                return
            request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
            method, path = (request_line.split(" ") + ["", ""])[:2]
            length = 0
            for header in head.split(b"\r\n")[1:]:
                name, _, value = header.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
                elif name.strip().lower() == b"transfer-encoding":
                    raise AssertionError("chunked request bodies are not supported by the proxy")
            body = await reader.readexactly(length) if length else b""
            fail = self.fail_http
            if fail is not None and fail(method, path):
                self.http_requests_cut += 1
                writer.write(head + body[: len(body) // 2])
                await writer.drain()
                await asyncio.sleep(0.05)
                for w in link:
                    w.transport.abort()
                return
            writer.write(head + body)
            await writer.drain()
