"""Signing in and out, API tokens, security headers, and the layout at phone width."""

from __future__ import annotations

import re

import pytest

from tests.web.conftest import PASSWORD, PHONE

expect = pytest.importorskip("playwright.async_api").expect

pytestmark = pytest.mark.browser


async def test_sign_up_sign_out_and_back_in(web):
    page = await web.new_page()
    await page.goto("/settings")
    await expect(page).to_have_url(re.compile(r"/login\?next=/settings$"))
    await page.get_by_role("link", name="Create an account").click()
    await expect(page).to_have_url(re.compile(r"/register\?next=/settings$"))

    await page.get_by_label("Email").fill("newcomer@example.com")
    await page.get_by_label("Password").fill("short")
    await page.get_by_role("button", name="Create account").click()
    await expect(page.locator("#auth-error")).to_contain_text("at least 8 characters")
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Create account").click()
    await expect(page).to_have_url(re.compile(r"/settings$"))
    await expect(page.get_by_role("heading", level=1)).to_have_text("Settings")
    csrf = page.locator('meta[name="csrf-token"]')
    await expect(csrf).to_have_attribute("content", re.compile(r"^[0-9a-f]{64}$"))

    await page.get_by_role("button", name="Sign out").click()
    await expect(page).to_have_url(re.compile(r"/login$"))
    await page.goto("/history?flow=quick")
    await expect(page).to_have_url(re.compile(r"/login\?next=/history%3Fflow%3Dquick$"))

    await page.get_by_label("Email").fill("newcomer@example.com")
    await page.get_by_label("Password").fill("wrong password")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator("#auth-error")).to_contain_text("Wrong email or password")
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page).to_have_url(re.compile(r"/history\?flow=quick$"))
    await expect(page.get_by_label("Flow", exact=True)).to_have_value("quick")

    # A signed-in visitor is sent on from the sign-in page; foreign `next` targets are ignored.
    await page.goto("/login?next=//evil.example/")
    await expect(page).to_have_url(re.compile(r"127\.0\.0\.1:\d+/$"))
    # The only console noise is the browser reporting the refused sign-in (401).
    assert [e for e in web.console_errors if "401" not in e] == []


async def test_api_tokens_are_shown_once_and_revocable(web):
    await web.sign_up("scripter@example.com")
    page = await web.new_page()
    await page.goto("/settings")
    await expect(page.locator("#token-list")).to_contain_text("No API tokens yet")
    await page.get_by_label("Token name").fill("nightly batch")
    await page.get_by_role("button", name="Create token").click()
    value = page.locator("#token-value")
    await expect(value).to_have_value(re.compile(r"^fs_"))
    token = await value.input_value()
    await expect(page.locator("#token-list")).to_contain_text("nightly batch")

    # The token works for scripts (no cookie, no CSRF).
    me = await page.request.get("/api/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status == 200

    await page.get_by_role("button", name="Close").click()
    await expect(value).to_be_hidden()
    await page.get_by_role("button", name="Revoke token nightly batch").click()
    await page.locator("#confirm-dialog").get_by_role("button", name="Revoke").click()
    await expect(page.locator("#token-list")).to_contain_text("No API tokens yet")
    await page.reload()
    await expect(page.locator("#token-list")).to_contain_text("No API tokens yet")
    assert web.console_errors == []


async def test_security_headers_and_no_inline_script(web):
    await web.sign_up("careful@example.com")
    run = await web.start_run("quick")
    page = await web.new_page()
    violations: list[str] = []
    page.on("console", lambda m: "Content Security Policy" in m.text and violations.append(m.text))
    for path in ["/", f"/runs/{run['id']}", "/history", "/history/runs", "/settings"]:
        response = await page.goto(path)
        assert response.status == 200, path
        headers = response.headers
        csp = headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert "frame-ancestors 'none'" in csp
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "same-origin"
        html = await response.text()
        # Only external module scripts and inert JSON data blocks; no inline handlers or styles.
        for tag in re.findall(r"<script\b[^>]*>", html):
            assert 'src="/static/' in tag or 'type="application/json"' in tag, tag
        assert not re.search(r"\son[a-z]+=", html), path
        assert " style=" not in html, path
    api = await page.request.get("/api/auth/me")
    assert api.headers["x-content-type-options"] == "nosniff"
    assert "frame-ancestors 'none'" in api.headers["content-security-policy"]
    static = await page.request.get("/static/app.css")
    assert static.status == 200 and static.headers["content-type"].startswith("text/css")
    assert violations == []
    assert web.console_errors == []


async def test_pages_fit_a_phone(session_factory):
    web = await session_factory(PHONE)
    await web.sign_up("phone@example.com")
    run = await web.start_run("product-shot")
    [generation] = await web.generate(run["id"], "object", count=1)
    await web.adopt(run["id"], "object", generation["id"])
    page = await web.new_page()
    await page.goto("/")
    assert await page.evaluate("innerWidth") == PHONE["width"]
    for path in ["/", f"/runs/{run['id']}", "/history", "/history/runs", "/settings"]:
        await page.goto(path)
        await page.wait_for_load_state("domcontentloaded")
        await page.wait_for_timeout(200)
        overflow = await page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"{path} scrolls sideways by {overflow}px at phone width"

    # The candidates dialog fills the screen and its controls are reachable.
    await page.goto(f"/runs/{run['id']}")
    await page.locator("#step-object").get_by_role("button", name=re.compile("^Candidates")).click()
    dialog = page.locator("#cands-object")
    await expect(dialog.locator(".cand")).to_have_count(1)
    box = await dialog.bounding_box()
    assert box is not None and box["width"] <= PHONE["width"]
    await expect(dialog.get_by_role("button", name="Close")).to_be_in_viewport()
    # Focus moved into the dialog and returns to the opener when it closes.
    assert await page.evaluate("document.activeElement.closest('dialog')?.id") == "cands-object"
    await page.keyboard.press("Escape")
    assert await page.evaluate("document.activeElement.dataset.action") == "open-candidates"
    assert web.console_errors == []
