"""The history pages in a real browser: filters in the URL, search, the detail drawer, delete with
undo, batch delete, the trash, the by-run view — and another user seeing none of it."""

from __future__ import annotations

import re

import pytest

expect = pytest.importorskip("playwright.async_api").expect

pytestmark = pytest.mark.browser


async def seed(web) -> dict:
    """Two runs: a product shot (two objects, one adopted, one failure) and a quick image."""
    product = await web.start_run("product-shot", product="a red teapot")
    objects = await web.generate(product["id"], "object", count=2, prompt="a red teapot on white")
    await web.adopt(product["id"], "object", objects[0]["id"])
    [failed] = await web.generate(product["id"], "object", prompt="[fail:content_blocked] teapot")
    quick = await web.start_run("quick", prompt="a lighthouse")
    [lighthouse] = await web.generate(quick["id"], "image", prompt="lighthouse at dusk, sea mist")
    assert {g["status"] for g in [*objects, lighthouse]} == {"succeeded"}
    assert failed["status"] == "failed"
    return {
        "product": product,
        "quick": quick,
        "objects": objects,
        "failed": failed,
        "lighthouse": lighthouse,
    }


def cards(page):
    return page.locator("#history-grid .hist-card")


async def test_filter_search_drawer_and_delete_with_undo(web):
    await web.sign_up("historian@example.com")
    data = await seed(web)
    page = await web.new_page()
    await page.goto("/history")
    await expect(cards(page)).to_have_count(4)
    # Newest first.
    await expect(cards(page).first).to_have_attribute("data-id", data["lighthouse"]["id"])
    await expect(cards(page).first.locator(".tag")).to_have_text("Quick image")
    await expect(cards(page).first.locator(".badge")).to_have_text("Done")
    failed = page.locator(f".hist-card[data-id='{data['failed']['id']}']")
    await expect(failed.locator(".badge")).to_have_text("Failed")

    # Filters live in the URL and survive a reload.
    await page.get_by_label("Flow", exact=True).select_option("quick")
    await expect(page).to_have_url(re.compile(r"/history\?flow=quick$"))
    await expect(cards(page)).to_have_count(1)
    await page.reload()
    await expect(page.get_by_label("Flow", exact=True)).to_have_value("quick")
    await expect(cards(page)).to_have_count(1)
    await page.get_by_role("button", name="Reset").click()
    await expect(cards(page)).to_have_count(4)

    await page.get_by_label("Status", exact=True).select_option("failed")
    await expect(cards(page)).to_have_count(1)
    await expect(cards(page).first).to_have_attribute("data-id", data["failed"]["id"])
    await page.get_by_label("Status", exact=True).select_option("")
    await expect(cards(page)).to_have_count(4)

    await page.get_by_label("Search prompts").fill("lightho")
    await expect(cards(page)).to_have_count(1)
    await expect(page).to_have_url(re.compile(r"q=lightho"))
    await page.get_by_label("Search prompts").fill("")
    await expect(cards(page)).to_have_count(4)

    # A date range that ends before today finds nothing; one that includes today finds all.
    await page.get_by_label("To", exact=True).fill("2020-01-01")
    await expect(page.locator("[data-slot=empty]")).to_contain_text("Nothing matches")
    await page.get_by_label("To", exact=True).fill("")
    await page.get_by_label("From", exact=True).fill("2020-01-01")
    await expect(cards(page)).to_have_count(4)
    await page.get_by_role("button", name="Reset").click()

    # The detail drawer.
    lighthouse = page.locator(f".hist-card[data-id='{data['lighthouse']['id']}']")
    await lighthouse.locator(".hist-thumb").click()
    drawer = page.locator("#drawer")
    await expect(drawer).to_be_visible()
    await expect(drawer.locator(".drawer-image")).to_be_visible()
    await expect(drawer).to_contain_text("lighthouse at dusk, sea mist")
    await expect(drawer).to_contain_text("local-sketch")
    await expect(drawer).to_contain_text("SHA-256")
    await expect(drawer).to_contain_text(data["lighthouse"]["asset"]["sha256"])
    await expect(drawer).to_contain_text("provider")  # a timing from output.timings
    await expect(drawer.locator("a[data-link=run]")).to_have_attribute(
        "href", f"/runs/{data['quick']['id']}#step-image"
    )
    await expect(drawer.get_by_role("link", name="Download")).to_have_attribute(
        "href", data["lighthouse"]["asset"]["download_url"]
    )

    # Delete with confirmation, optimistic removal, then undo.
    await drawer.get_by_role("button", name="Delete").click()
    confirm = page.locator("#confirm-dialog")
    await expect(confirm).to_be_visible()
    await confirm.get_by_role("button", name="Delete").click()
    await expect(lighthouse).to_have_count(0)
    await expect(cards(page)).to_have_count(3)
    toast = page.locator(".toast", has_text="Deleted")
    await toast.get_by_role("button", name="Undo").click()
    await expect(page.locator(".toast", has_text="Restored")).to_be_visible()
    await expect(cards(page)).to_have_count(4)
    await expect(cards(page).first).to_have_attribute("data-id", data["lighthouse"]["id"])
    live = await web.api("GET", "/api/history")
    assert len(live["items"]) == 4

    # Cancelling the confirmation deletes nothing.
    await lighthouse.locator(".hist-thumb").click()
    await drawer.get_by_role("button", name="Delete").click()
    await confirm.get_by_role("button", name="Cancel").click()
    await expect(confirm).to_be_hidden()
    await page.keyboard.press("Escape")
    await expect(cards(page)).to_have_count(4)
    assert web.console_errors == []


async def test_batch_delete_trash_and_restore(web):
    await web.sign_up("tidy@example.com")
    data = await seed(web)
    page = await web.new_page()
    await page.goto("/history")
    await expect(cards(page)).to_have_count(4)

    doomed = [data["objects"][1]["id"], data["failed"]["id"]]
    for generation_id in doomed:
        await page.locator(f".hist-card[data-id='{generation_id}'] .select-check").check()
    bar = page.locator("#selection-bar")
    await expect(bar).to_contain_text("2 selected")
    await bar.get_by_role("button", name="Delete selected").click()
    await page.locator("#confirm-dialog").get_by_role("button", name="Delete 2").click()
    await expect(cards(page)).to_have_count(2)
    await expect(page.locator(".toast", has_text="Deleted 2 generations")).to_be_visible()
    await expect(bar).to_be_hidden()

    # The trash lists them; restore one.
    await page.get_by_role("link", name="Trash").click()
    await expect(page).to_have_url(re.compile(r"deleted=true"))
    await expect(page.get_by_role("heading", level=1)).to_have_text("Trash")
    await expect(cards(page)).to_have_count(2)
    await page.locator(f".hist-card[data-id='{data['failed']['id']}'] .select-check").check()
    await bar.get_by_role("button", name="Restore selected").click()
    await expect(page.locator(".toast", has_text="Restored")).to_be_visible()
    await expect(cards(page)).to_have_count(1)

    # Restore from the drawer too.
    await cards(page).first.locator(".hist-thumb").click()
    await page.locator("#drawer").get_by_role("button", name="Restore").click()
    await expect(page.locator("[data-slot=empty]")).to_contain_text("The trash is empty")

    await page.get_by_role("link", name="All", exact=True).click()
    await expect(cards(page)).to_have_count(4)
    assert web.console_errors == []


async def test_by_run_view_adopts_and_downloads(web):
    await web.sign_up("runner@example.com")
    data = await seed(web)
    page = await web.new_page()
    await page.goto("/history/runs")
    block = page.locator(f".run-block[data-run='{data['product']['id']}']")
    await expect(block).to_contain_text("Product shot: a red teapot")
    step = block.locator(".run-step[data-step=object]")
    await step.locator("summary").click()
    tiles = step.locator(".cand")
    await expect(tiles).to_have_count(3)
    adopted = step.locator(".cand.is-adopted")
    await expect(adopted).to_have_attribute("data-id", data["objects"][0]["id"])
    await expect(step.locator(".cand[data-status=failed]")).to_contain_text(
        "Blocked by the provider's content policy"
    )

    other = step.locator(f".cand[data-id='{data['objects'][1]['id']}']")
    download = other.get_by_role("link", name=re.compile("Download"))
    await expect(download).to_have_attribute("href", data["objects"][1]["asset"]["download_url"])
    async with page.expect_download() as info:
        await download.click()
    downloaded = await info.value
    assert downloaded.suggested_filename.endswith(".png")

    await other.get_by_role("button", name="Adopt", exact=True).click()
    await expect(other).to_have_class(re.compile("is-adopted"))
    await expect(page.locator(".toast", has_text="Adopted for Object")).to_be_visible()
    run = await web.api("GET", f"/api/runs/{data['product']['id']}")
    assert run["steps"][0]["adopted_generation_id"] == data["objects"][1]["id"]
    assert web.console_errors == []


async def test_another_user_sees_none_of_it(web, session_factory):
    await web.sign_up("owner@example.com")
    data = await seed(web)

    stranger = await session_factory()
    await stranger.sign_up("stranger@example.com")
    page = await stranger.new_page()
    await page.goto("/history")
    await expect(page.locator("[data-slot=empty]")).to_contain_text("No generations yet")
    await expect(cards(page)).to_have_count(0)
    await page.goto("/")
    await expect(page.get_by_text("No runs yet.")).to_be_visible()
    await page.goto("/history/runs")
    await expect(page.get_by_text("No runs yet.")).to_be_visible()

    response = await page.goto(f"/runs/{data['product']['id']}")
    assert response.status == 404
    await expect(page.get_by_role("heading", level=1)).to_have_text("Nothing here")
    thumbnail = data["lighthouse"]["asset"]["thumbnail_url"]
    assert (await page.request.get(thumbnail)).status == 404
    assert (await page.request.get(f"/api/history/{data['lighthouse']['id']}")).status == 404


async def test_infinite_scroll_adopted_filter_and_adopt_from_drawer(web):
    await web.sign_up("prolific@example.com")
    run = await web.start_run("quick", prompt="a lighthouse")
    made = []
    for _ in range(9):
        made += await web.generate(run["id"], "image", count=4)
    assert len(made) == 36 and {g["status"] for g in made} == {"succeeded"}
    await web.adopt(run["id"], "image", made[-1]["id"])

    page = await web.new_page()
    await page.goto("/history")
    # The first page holds 30; scrolling to the end loads the rest through next_cursor.
    await expect(cards(page)).to_have_count(30)
    await page.locator("#scroll-sentinel").scroll_into_view_if_needed()
    await expect(cards(page)).to_have_count(36)
    await expect(page.locator("[data-slot=end]")).to_be_visible()
    await expect(page.get_by_role("button", name="Load more")).to_be_hidden()

    await page.get_by_label("Adopted only").check()
    await expect(page).to_have_url(re.compile(r"adopted=true"))
    await expect(cards(page)).to_have_count(1)
    await expect(cards(page).first).to_have_attribute("data-id", made[-1]["id"])
    await page.get_by_label("Adopted only").uncheck()

    # Adopt another candidate from the detail drawer.
    other = page.locator(f".hist-card[data-id='{made[-2]['id']}']")
    await other.locator(".hist-thumb").click()
    drawer = page.locator("#drawer")
    await drawer.get_by_role("button", name="Adopt in its run").click()
    await expect(page.locator(".toast", has_text="Adopted")).to_be_visible()
    await expect(drawer.get_by_role("button", name="Adopted")).to_be_disabled()
    described = await web.api("GET", f"/api/runs/{run['id']}")
    assert described["steps"][0]["adopted_generation_id"] == made[-2]["id"]
    await page.keyboard.press("Escape")
    await expect(other.locator(".hist-adopted")).to_have_count(1)
    previous = page.locator(f".hist-card[data-id='{made[-1]['id']}']")
    await expect(previous.locator(".hist-adopted")).to_have_count(0)
    assert web.console_errors == []
