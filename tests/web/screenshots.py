"""Regenerate the UI screenshots in docs/screenshots/ (run: scripts/screenshots.sh).

Serves a throw-away FlowStudio (temporary data dir, SQLite, local provider) on a loopback port,
fills it with a demo run through the API, and photographs the run page, a candidates dialog and
the history page at desktop (1280×800) and phone (390×844) width with Debian's Chromium, and
at desktop width in Traditional and Simplified Chinese (a user who writes in each).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import uvicorn
from playwright.async_api import async_playwright

from flowstudio.app import create_app
from flowstudio.config import Settings
from tests.web.conftest import CHROMIUM_ARGS, DESKTOP, PASSWORD, PHONE, chromium_path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "docs" / "screenshots"


async def serve(app: Any) -> tuple[uvicorn.Server, asyncio.Task[None], str]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
        if task.done():
            task.result()
    port = server.servers[0].sockets[0].getsockname()[1]
    return server, task, f"http://127.0.0.1:{port}"


class Client:
    def __init__(self, context: Any, base: str) -> None:
        self.context, self.base, self.csrf = context, base, ""

    async def call(self, method: str, path: str, body: Any = None, wait: bool = False) -> Any:
        headers = {"X-CSRF-Token": self.csrf}
        if wait:
            headers["Prefer"] = "wait=30"
        response = await self.context.request.fetch(
            self.base + path, method=method, data=body, headers=headers
        )
        assert response.ok, await response.text()
        return await response.json()

    async def generate(self, run_id: str, step: str, wait: bool = True, **body: Any) -> list[dict]:
        result = await self.call("POST", f"/api/runs/{run_id}/steps/{step}/generate", body, wait)
        return result["generations"]

    async def adopt(self, run_id: str, step: str, generation_id: str) -> None:
        await self.call(
            "POST", f"/api/runs/{run_id}/steps/{step}/adopt", {"generation_id": generation_id}
        )


# What each screenshot user types: English, or Chinese in the script of their language.
TEXTS = {
    "en": (
        "ada@example.com",
        "a matte black ceramic coffee mug",
        "a coffee mug",
        "a mug, side view",
    ),
    "zh-TW": ("lin@example.com", "霧面黑色陶瓷咖啡杯", "咖啡杯", "馬克杯側面"),
    "zh-CN": ("wang@example.com", "哑光黑色陶瓷咖啡杯", "咖啡杯", "马克杯侧面"),
}


async def seed(client: Client, language: str = "en") -> dict[str, Any]:
    email, product, blocked, slow = TEXTS[language]
    body = await client.call("POST", "/api/auth/register", {"email": email, "password": PASSWORD})
    client.csrf = body["csrf_token"]
    quick = await client.call("POST", "/api/flows/quick/runs", {"inputs": {}})
    await client.generate(quick["id"], "image", count=2, seed=7)
    character = await client.call("POST", "/api/flows/character-sheet/runs", {"inputs": {}})
    [hero] = await client.generate(character["id"], "character", seed=11)
    await client.adopt(character["id"], "character", hero["id"])
    await client.generate(character["id"], "pose", count=2, seed=3)

    run = await client.call(
        "POST",
        "/api/flows/product-shot/runs",
        {"inputs": {"product": product}},
    )
    objects = await client.generate(run["id"], "object", count=3, seed=42)
    await client.adopt(run["id"], "object", objects[1]["id"])
    await client.generate(run["id"], "object", prompt=f"[fail:content_blocked] {blocked}")
    scenes = await client.generate(run["id"], "scene", count=3, seed=5, temperature=0.9)
    await client.adopt(run["id"], "scene", scenes[0]["id"])
    # Left running while the pictures are taken: shows the live placeholder.
    await client.generate(run["id"], "object", wait=False, prompt=f"[slow:60] {slow}")
    await client.generate(run["id"], "poster", wait=False, prompt="[slow:60] poster")
    return run


async def shoot(base: str, users: dict[str, tuple[dict, Any]], browser: Any) -> list[Path]:
    OUT.mkdir(parents=True, exist_ok=True)
    written = []
    for name, viewport, scheme, language in [
        ("desktop", DESKTOP, "light", "en"),
        ("phone", PHONE, "light", "en"),
        ("desktop-dark", DESKTOP, "dark", "en"),
        ("desktop-zh-TW", DESKTOP, "light", "zh-TW"),
        ("desktop-zh-CN", DESKTOP, "light", "zh-CN"),
    ]:
        run, storage_state = users[language]
        context = await browser.new_context(
            viewport=viewport,
            base_url=base,
            storage_state=storage_state,
            color_scheme=scheme,
            device_scale_factor=1,
            locale=language if language != "en" else "en-US",
        )
        page = await context.new_page()

        async def snap(label: str, page: Any = page, name: str = name) -> None:
            await page.wait_for_timeout(400)  # let images decode and animations settle
            path = OUT / f"{label}-{name}.png"
            await page.screenshot(path=str(path))
            written.append(path)

        await page.goto(f"/runs/{run['id']}")
        await page.locator("[data-slot=live][data-state=live]").wait_for()
        await snap("run")
        await page.locator("#step-object [data-action=open-candidates]").click()
        await page.locator("#cands-object .cand[data-status=succeeded] img").first.wait_for()
        await snap("candidates-dialog")
        await page.goto("/history")
        await page.locator("#history-grid .hist-card").first.wait_for()
        await snap("history")
        if name.startswith("desktop") and scheme == "light":
            await page.locator("#history-grid .hist-card .hist-thumb").nth(2).click()
            await page.locator("#drawer .drawer-section").first.wait_for()
            await snap("history-drawer")
        await context.close()
    return written


def cjk_fontconfig(directory: Path) -> dict[str, str]:
    """Environment for a Chromium that can draw Chinese: the system's fonts plus the Noto Sans
    CJK that FlowStudio already installs (for its captions), without installing fonts."""
    import importlib.resources

    fonts = importlib.resources.files("noto_cjk_sans_otc")
    config = directory / "fonts.conf"
    config.write_text(
        '<?xml version="1.0"?>\n<!DOCTYPE fontconfig SYSTEM "fonts.dtd">\n<fontconfig>\n'
        '  <include ignore_missing="yes">/etc/fonts/fonts.conf</include>\n'
        f"  <dir>{fonts}</dir>\n  <cachedir>{directory / 'cache'}</cachedir>\n</fontconfig>\n"
    )
    return {"FONTCONFIG_FILE": str(config)}


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args()
    executable = chromium_path()
    if executable is None:
        print("Chromium is not installed (apt-get install chromium).", file=sys.stderr)
        return 1
    data_dir = Path(tempfile.mkdtemp(prefix="flowstudio-shots-"))
    settings = Settings(
        _env_file=None,
        data_dir=data_dir,
        secret_key="screenshots-" + "x" * 32,
        argon2_time_cost=1,
        argon2_memory_cost=1024,
    )
    app = create_app(settings)
    try:
        async with app.router.lifespan_context(app):
            server, task, base = await serve(app)
            try:
                async with async_playwright() as playwright:
                    browser = await playwright.chromium.launch(
                        executable_path=executable,
                        args=CHROMIUM_ARGS,
                        env={**os.environ, **cjk_fontconfig(data_dir)},
                    )
                    users = {}
                    for language in TEXTS:
                        # The user's browser language: it names the runs the API makes for them.
                        locale = language if language != "en" else "en-US"
                        context = await browser.new_context(
                            base_url=base,
                            locale=locale,
                            extra_http_headers={"Accept-Language": locale},
                        )
                        client = Client(context, base)
                        run = await seed(client, language)
                        users[language] = (run, await context.storage_state())
                        await context.close()
                    written = await shoot(base, users, browser)
                    await browser.close()
            finally:
                server.should_exit = True
                await task
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    for path in written:
        print(path.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
