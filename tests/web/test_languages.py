"""A newcomer whose browser prefers Chinese, in Chromium: every page, dialog, toast and error
they meet reads in their language (no English word a person would read), and `茶壺` finds the
`茶壶` they made."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.web.conftest import PASSWORD

expect = pytest.importorskip("playwright.async_api").expect

pytestmark = pytest.mark.browser

# What may stay in Latin letters: the product's name, the language picker's own "English",
# technical names that are the same in Chinese UIs, and what the user typed or the server names.
ALLOWED = {
    "FlowStudio",
    "English",
    "API",
    "ID",
    "PNG",
    "WebP",
    "SHA",
    "Bearer",
    "Authorization",
    "local",
    "OpenAI",
    "Gemini",
    "Replicate",
    "Cloudflare",
    "sketch",
    "poster",
    "px",
    "KB",
    "MB",
    "GB",
}
WORD = re.compile(r"[A-Za-z]{2,}")

# The visible text of the page, and the attributes people read (tooltips, labels, placeholders,
# alt text) of elements that are shown.
READABLE = """() => {
  const parts = [document.title, document.body.innerText];
  for (const el of document.querySelectorAll("[title], [aria-label], [placeholder], img[alt]")) {
    const shown = el.checkVisibility() || el.closest("dialog[open]");
    if (!shown) continue;
    for (const name of ["title", "aria-label", "placeholder", "alt"]) {
      const value = el.getAttribute(name);
      if (value) parts.push(value);
    }
  }
  return parts.join("\\n");
}"""


async def english_words(page: Any, *typed: str) -> list[str]:
    text = await page.evaluate(READABLE)
    for value in typed:  # what the user typed, and ids, shown as they are
        text = text.replace(value, " ")
    text = re.sub(r"\b[0-9a-f]{8}-[0-9a-f-]{27}\b", " ", text)  # ids
    text = re.sub(r"\b[0-9a-f]{16,}\b", " ", text)  # hashes
    text = re.sub(r"\b(?:image|application)/[a-z0-9.+-]+", " ", text)  # media types
    text = re.sub(r"[\w.+-]+@[\w.-]+", " ", text)  # emails
    text = re.sub(r"\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+\b", " ", text)  # setting names
    text = re.sub(r"\b[a-z]+(?:_[a-z]+)+\b", " ", text)  # problem codes (not_found)
    text = re.sub(r"\b[a-z0-9]+(?:-[a-z0-9.]+)+\b", " ", text)  # model names (gpt-image-1)
    return sorted({w for w in WORD.findall(text) if w not in ALLOWED})


async def assert_chinese(page: Any, where: str, *typed: str) -> None:
    assert await english_words(page, *typed) == [], where


@pytest.mark.parametrize(
    ("locale", "lang", "prompt", "search"),
    [
        ("zh-TW", "zh-TW", "一隻紅色的陶瓷茶壺，放在木桌上", "茶壺"),
        ("zh-CN", "zh-CN", "一只红色的陶瓷茶壶，放在木桌上", "茶壺"),
    ],
)
async def test_a_chinese_newcomer_meets_no_english(session_factory, locale, lang, prompt, search):
    web = await session_factory(locale=locale)
    page = await web.new_page()

    # Register from the sign-in page.
    await page.goto("/login")
    await expect(page.locator("html")).to_have_attribute("lang", lang)
    await assert_chinese(page, "sign in")
    await page.goto("/register")
    await assert_chinese(page, "register")
    await page.locator("#email").fill(f"newcomer-{lang.lower()}@example.com")
    await page.locator("#password").fill("short")
    await page.locator("#auth-form button[type=submit]").click()
    await expect(page.locator("#auth-error")).to_be_visible()
    await assert_chinese(page, "register error")
    await page.locator("#password").fill(PASSWORD)
    await page.locator("#auth-form button[type=submit]").click()
    await expect(page).to_have_url(re.compile(r"/$"))
    await assert_chinese(page, "flows")

    # Start a quick run with a Chinese prompt; generate three candidates; adopt one.
    quick = page.locator(".flow-card[data-flow=quick]")
    await quick.locator("textarea, input[type=text]").first.fill(prompt)
    await quick.locator("button[type=submit]").click()
    await expect(page).to_have_url(re.compile(r"/runs/[0-9a-f-]{36}$"))
    await assert_chinese(page, "run", prompt)
    step = page.locator(".step-card").first
    await step.locator("button[data-action=generate][data-count='3']").click()
    candidates = page.locator("dialog.candidates-dialog[open]")
    await expect(candidates).to_be_visible()
    await expect(candidates.locator(".cand[data-status=succeeded]")).to_have_count(
        3, timeout=20_000
    )
    await assert_chinese(page, "candidates dialog", prompt)
    await candidates.locator(".cand button[data-action=adopt]").first.click()
    await expect(page.locator(".toast").first).to_be_visible()
    await assert_chinese(page, "adopted", prompt)
    await page.keyboard.press("Escape")

    # History: search in the other script, the drawer, delete, the trash.
    await page.goto("/history")
    await expect(page.locator(".hist-card")).to_have_count(3)
    await assert_chinese(page, "history", prompt)
    await page.locator("#f-q").fill(search)
    await expect(page).to_have_url(re.compile(r"q="))
    await expect(page.locator(".hist-card")).to_have_count(3)
    await page.locator("#f-q").fill("不存在的東西")
    await expect(page.locator("[data-slot=empty]")).to_be_visible()
    await assert_chinese(page, "history, nothing found", prompt, "不存在的東西")
    await page.locator("#f-q").fill("")
    await expect(page.locator(".hist-card")).to_have_count(3)
    await page.locator(".hist-card .hist-thumb").first.click()
    drawer = page.locator("#drawer")
    await expect(drawer).to_be_visible()
    await assert_chinese(page, "drawer", prompt)
    await drawer.locator("button[data-action=delete]").click()
    confirm = page.locator("#confirm-dialog")
    await expect(confirm).to_be_visible()
    await assert_chinese(page, "confirm", prompt)
    await confirm.locator("button[value=confirm]").click()
    await expect(page.locator(".hist-card")).to_have_count(2)
    await assert_chinese(page, "deleted", prompt)
    await page.goto("/history?deleted=true")
    await expect(page.locator(".hist-card")).to_have_count(1)
    await assert_chinese(page, "trash", prompt)

    # By run, settings with a new API token, and an error page.
    await page.goto("/history/runs")
    await assert_chinese(page, "by run", prompt)
    await page.goto("/settings")
    await page.locator("#token-name").fill("腳本")
    await page.locator("#token-form button[type=submit]").click()
    await expect(page.locator("#token-created")).to_be_visible()
    token = await page.locator("#token-value").input_value()
    # The new token and the start of it that the list shows are the token's own characters.
    await assert_chinese(page, "settings", token, token[:10], "腳本")
    missing = await page.goto("/runs/00000000-0000-7000-8000-000000000000")
    assert missing.status == 404
    await assert_chinese(page, "not found")
    # The browser logs the 422 and 404 answers it was given; nothing else went wrong.
    assert [e for e in web.console_errors if "Failed to load resource" not in e] == []


async def test_the_header_switches_the_language_and_the_account_keeps_it(session_factory):
    web = await session_factory(locale="en-US")
    await web.sign_up("switcher@example.com")
    page = await web.new_page()
    await page.goto("/history")
    await expect(page.locator("html")).to_have_attribute("lang", "en")
    await page.locator("select[data-action=language]").select_option("zh-TW")
    await expect(page.locator("html")).to_have_attribute("lang", "zh-TW")
    await assert_chinese(page, "switched")
    me = await web.api("GET", "/api/auth/me")
    assert me["user"]["language"] == "zh-TW"
    # Another browser of an English reader, same account: signed in, it follows the account.
    other = await session_factory(locale="en-US")
    await other.api(
        "POST",
        "/api/auth/login",
        {"email": "switcher@example.com", "password": PASSWORD},
        expect=200,
    )
    second = await other.new_page()
    await second.goto("/")
    await expect(second.locator("html")).to_have_attribute("lang", "zh-TW")
