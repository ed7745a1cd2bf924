"""Browser-test fixtures: Debian's Chromium driven by Playwright against the live server.

One Chromium process serves the whole session; every test connects to it (over CDP, from the
test's own event loop, where the live server runs) and gets a fresh browser context, so cookies
and storage never leak between tests. The suite runs on SQLite only: it tests the pages, and the
API below them is covered on both backends elsewhere.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
PASSWORD = "correct horse battery"


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def backend() -> str:
    return "sqlite"


@pytest.fixture(scope="session")
def chromium_endpoint() -> Iterator[str]:
    """The CDP endpoint of one headless Chromium for the whole session."""
    path = chromium_path()
    if path is None:
        message = "Chromium is not installed (apt-get install chromium); browser tests need it"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    try:
        import playwright  # noqa: F401
    except ImportError:
        pytest.skip("playwright is not installed")
    profile = tempfile.mkdtemp(prefix="flowstudio-chromium-")
    process = subprocess.Popen(
        [
            path,
            *CHROMIUM_ARGS,
            "--remote-debugging-port=0",
            "--remote-debugging-address=127.0.0.1",
            f"--user-data-dir={profile}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    endpoint = None
    deadline = time.monotonic() + 30
    assert process.stderr is not None
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            if process.poll() is not None:
                break
            continue
        match = re.search(r"DevTools listening on (ws://\S+)", line)
        if match:
            endpoint = match.group(1)
            break
    if endpoint is None:
        process.kill()
        pytest.fail("Chromium did not start (no DevTools endpoint)", pytrace=False)
    # Keep draining stderr so Chromium never blocks on a full pipe.
    import threading

    threading.Thread(target=lambda: [None for _ in process.stderr], daemon=True).start()  # type: ignore[union-attr]
    try:
        yield endpoint
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
async def browser(chromium_endpoint: str) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        connected = await playwright.chromium.connect_over_cdp(chromium_endpoint)
        try:
            yield connected
        finally:
            for context in connected.contexts[1:]:  # [0] is Chromium's default context
                await context.close()


class Session:
    """A browser context on the live server, with API helpers that share its cookies."""

    def __init__(self, context: Any, base_url: str) -> None:
        self.context = context
        self.base_url = base_url
        self.csrf_token = ""
        self.console_errors: list[str] = []

    async def new_page(self) -> Any:
        page = await self.context.new_page()
        page.set_default_timeout(10_000)
        page.on("console", lambda m: m.type == "error" and self.console_errors.append(m.text))
        page.on("pageerror", lambda e: self.console_errors.append(str(e)))
        return page

    async def api(
        self,
        method: str,
        path: str,
        json: Any = None,
        *,
        headers: dict[str, str] | None = None,
        expect: int | None = None,
    ) -> Any:
        all_headers = {"X-CSRF-Token": self.csrf_token, **(headers or {})}
        response = await self.context.request.fetch(
            self.base_url + path, method=method, data=json, headers=all_headers
        )
        if expect is not None:
            assert response.status == expect, await response.text()
        if response.status == 204:
            return None
        return await response.json()

    async def sign_up(self, email: str) -> dict:
        body = await self.api(
            "POST", "/api/auth/register", {"email": email, "password": PASSWORD}, expect=201
        )
        self.csrf_token = body["csrf_token"]
        return body["user"]

    async def start_run(self, flow: str = "product-shot", **inputs: str) -> dict:
        return await self.api("POST", f"/api/flows/{flow}/runs", {"inputs": inputs}, expect=201)

    async def generate(self, run_id: str, step_id: str, **body: Any) -> list[dict]:
        result = await self.api(
            "POST",
            f"/api/runs/{run_id}/steps/{step_id}/generate",
            body,
            headers={"Prefer": "wait=20"},
        )
        return result["generations"]

    async def adopt(self, run_id: str, step_id: str, generation_id: str) -> dict:
        return await self.api(
            "POST",
            f"/api/runs/{run_id}/steps/{step_id}/adopt",
            {"generation_id": generation_id},
            expect=200,
        )


@pytest.fixture
async def session_factory(browser: Any, live_server: str) -> AsyncIterator[Any]:
    """Make as many independent browser sessions (users) as a test needs."""
    contexts = []

    async def make(viewport: dict[str, int] | None = None, locale: str | None = None) -> Session:
        # `locale` is what the browser prefers: its Accept-Language and navigator.language.
        context = await browser.new_context(
            viewport=viewport or DESKTOP,
            accept_downloads=True,
            base_url=live_server,
            **({"locale": locale} if locale else {}),
        )
        contexts.append(context)
        return Session(context, live_server)

    try:
        yield make
    finally:
        for context in contexts:
            await context.close()


@pytest.fixture
async def web(session_factory: Any) -> Session:
    return await session_factory()
