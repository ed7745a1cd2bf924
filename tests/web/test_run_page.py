"""The run page in a real browser: generate 1x/3x, live placeholders, adopt, invalidation, clear,
lightbox, failures with retry — and a second tab showing the same truth."""

from __future__ import annotations

import re

import pytest

expect = pytest.importorskip("playwright.async_api").expect

pytestmark = pytest.mark.browser


def card(page, step_id: str):
    return page.locator(f"#step-{step_id}")


def dialog(page, step_id: str):
    return page.locator(f"#cands-{step_id}")


async def test_generate_adopt_invalidate_clear_and_lightbox(web):
    await web.sign_up("maker@example.com")
    page = await web.new_page()

    # Start a product-shot run from the flows page.
    await page.goto("/")
    flow = page.locator(".flow-card[data-flow=product-shot]")
    await flow.get_by_label("Product", exact=True).fill("a glass teapot")
    await flow.get_by_role("button", name="Start run").click()
    await expect(page).to_have_url(re.compile(r"/runs/[0-9a-f-]{36}$"))
    await expect(page.get_by_role("heading", level=1)).to_contain_text("a glass teapot")
    await expect(page.locator("[data-slot=live]")).to_have_text("Live")

    # Later steps are blocked, and say why.
    scene_generate = card(page, "scene").get_by_role("button", name="Generate", exact=True)
    await expect(scene_generate).to_be_disabled()
    await expect(card(page, "scene").locator("[data-slot=reason]")).to_contain_text(
        "Adopt an image in Object first"
    )

    # Generate 1x with a slow prompt: the placeholder turns into an image without a reload.
    object_card = card(page, "object")
    await object_card.locator("summary", has_text="Prompt").click()
    await object_card.get_by_label(re.compile("Custom prompt")).fill("[slow:1] a glass teapot")
    await object_card.get_by_role("button", name="Generate", exact=True).click()
    cands = dialog(page, "object")
    await expect(cands).to_be_visible()
    tiles = cands.locator(".cand")
    await expect(tiles).to_have_count(1)
    waiting = cands.locator(".cand[data-status=pending], .cand[data-status=running]")
    await expect(waiting).to_have_count(1)
    await expect(waiting.locator(".cand-placeholder")).to_have_attribute("aria-busy", "true")
    done = cands.locator(".cand[data-status=succeeded] img")
    await expect(done).to_have_count(1, timeout=15_000)
    await expect(waiting).to_have_count(0)

    # 3x from the dialog: three more, all finishing live.
    await cands.get_by_role("button", name="Generate 3 candidates").click()
    await expect(tiles).to_have_count(4)
    await expect(cands.locator(".cand[data-status=succeeded]")).to_have_count(4, timeout=20_000)
    await expect(object_card.locator("[data-slot=count]")).to_have_text("4")

    # Adopt the oldest candidate: marked at once, confirmed by the server.
    first = tiles.nth(3)
    first_id = await first.get_attribute("data-id")
    await first.get_by_role("button", name="Adopt", exact=True).click()
    adopted = cands.locator(f".cand[data-id='{first_id}']")
    await expect(adopted).to_have_class(re.compile("is-adopted"))
    await expect(page.locator(".toast")).to_contain_text("Adopted for Object")
    await page.keyboard.press("Escape")
    await expect(cands).to_be_hidden()
    await expect(object_card.locator("[data-slot=media] img")).to_be_visible()
    await expect(object_card.locator("[data-slot=badge]")).to_have_text("Adopted")
    await expect(scene_generate).to_be_enabled()

    # Scene: generate and adopt.
    await scene_generate.click()
    scene_cands = dialog(page, "scene")
    scene_done = scene_cands.locator(".cand[data-status=succeeded]")
    await expect(scene_done).to_have_count(1, timeout=15_000)
    await scene_cands.get_by_role("button", name="Adopt", exact=True).click()
    await expect(scene_cands.locator(".cand.is-adopted")).to_have_count(1)
    await scene_cands.get_by_role("button", name="Close").click()
    await expect(card(page, "scene").locator("[data-slot=badge]")).to_have_text("Adopted")
    poster_generate = card(page, "poster").get_by_role("button", name="Generate", exact=True)
    await expect(poster_generate).to_be_enabled()

    # Re-adopting upstream invalidates the scene (and blocks the poster again).
    await object_card.get_by_role("button", name=re.compile("^Candidates")).click()
    await expect(cands).to_be_visible()
    second = tiles.nth(2)
    await second.get_by_role("button", name="Adopt", exact=True).click()
    await expect(page.locator(".toast", has_text="Scene needs a new adoption")).to_be_visible()
    await expect(cands.locator(".cand.is-adopted")).to_have_count(1)
    await expect(second).to_have_class(re.compile("is-adopted"))
    await page.keyboard.press("Escape")
    scene = card(page, "scene")
    await expect(scene.locator("[data-slot=badge]")).to_have_text("Needs re-adoption")
    await expect(scene.locator("[data-slot=invalidated]")).to_contain_text("Object changed")
    await expect(poster_generate).to_be_disabled()

    # A second tab shows the same truth (the state is on the server).
    other = await web.new_page()
    await other.goto(page.url)
    await expect(card(other, "object").locator("[data-slot=badge]")).to_have_text("Adopted")
    await expect(card(other, "scene").locator("[data-slot=invalidated]")).to_be_visible()
    await expect(card(other, "object").locator("[data-slot=count]")).to_have_text("4")
    await other.close()

    # The lightbox: open from a thumbnail, move with the arrow keys, close with Esc.
    await object_card.get_by_role("button", name=re.compile("^Candidates")).click()
    await tiles.nth(0).locator(".cand-thumb").click()
    lightbox = page.locator("#lightbox")
    await expect(lightbox).to_be_visible()
    position = lightbox.locator("[data-slot=position]")
    await expect(position).to_have_text("1 / 4")
    full_size = lightbox.locator("img.lightbox-img")
    await expect(full_size).to_have_attribute("src", re.compile(r"/image$"))
    await page.keyboard.press("ArrowRight")
    await expect(position).to_have_text("2 / 4")
    await page.keyboard.press("ArrowLeft")
    await page.keyboard.press("ArrowLeft")
    await expect(position).to_have_text("4 / 4")
    loaded = await lightbox.locator("img.lightbox-img").evaluate(
        "img => img.decode().then(() => img.naturalWidth)"
    )
    assert loaded > 0
    await page.keyboard.press("Escape")
    await expect(lightbox).to_be_hidden()
    await expect(cands).to_be_visible()  # Esc closed only the lightbox

    # Clear ("Plan A"): the adoption goes, the candidates stay.
    await cands.get_by_role("button", name="Clear adoption").click()
    await expect(page.locator(".toast", has_text="candidates are kept")).to_be_visible()
    await expect(cands.locator(".cand.is-adopted")).to_have_count(0)
    await expect(tiles).to_have_count(4)
    await page.keyboard.press("Escape")
    await expect(object_card.locator("[data-slot=badge]")).to_have_text("No image yet")
    await expect(scene_generate).to_be_disabled()
    assert web.console_errors == []


async def test_failed_generation_shows_its_error_and_retries(web):
    await web.sign_up("failing@example.com")
    run = await web.start_run("quick", prompt="a lighthouse")
    page = await web.new_page()
    await page.goto(f"/runs/{run['id']}")
    image = card(page, "image")
    await image.locator("summary", has_text="Prompt").click()
    await image.get_by_label(re.compile("Custom prompt")).fill("[fail:content_blocked] forbidden")
    await image.get_by_role("button", name="Generate", exact=True).click()

    cands = dialog(page, "image")
    failed = cands.locator(".cand[data-status=failed]")
    await expect(failed).to_have_count(1, timeout=15_000)
    await expect(failed).to_contain_text("Blocked by the provider's content policy")
    await expect(failed).to_contain_text("refused this prompt")

    # Retry generates again with the same prompt, seed and temperature.
    await failed.get_by_role("button", name="Retry").click()
    await expect(failed).to_have_count(2, timeout=15_000)
    generations = (await web.api("GET", f"/api/runs/{run['id']}/steps/image/assets"))["items"]
    assert len(generations) == 2
    assert {g["prompt"] for g in generations} == {"[fail:content_blocked] forbidden"}
    assert generations[0]["seed"] == generations[1]["seed"]
    assert generations[0]["temperature"] == generations[1]["temperature"]
    await page.keyboard.press("Escape")
    await expect(image.locator("[data-slot=counts]")).to_have_text("2 failed")
    assert web.console_errors == []
