"""The worker's image step: thumbnails in a process pool or a thread, and its failures."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from flowstudio.imaging import ImageProcessFailed, process_image
from flowstudio.providers import GenerationResult, LocalProvider
from tests.fixtures.flows import generate_ok, start_run


class FixedImageProvider(LocalProvider):
    """Answers every request with the same bytes, registered in place of `local`."""

    def __init__(self, image: bytes) -> None:
        super().__init__()
        self.image = image

    async def generate(self, request) -> GenerationResult:
        return GenerationResult(
            image=self.image, mime="image/png", model=request.model, provider_request_id="fixed-1"
        )


def png(size=(640, 480)) -> bytes:
    out = io.BytesIO()
    Image.radial_gradient("L").resize(size).convert("RGB").save(out, format="PNG")
    return out.getvalue()


@pytest.mark.parametrize("settings_overrides", [{"image_processes": 0}, {"image_processes": 1}])
async def test_pool_and_thread_store_the_same_thumbnail(app, alice, settings_overrides):
    data = png()
    app.state.ctx.providers.register(FixedImageProvider(data), replace=True)
    run = await start_run(alice)
    [generation] = await generate_ok(alice, run["id"], "object")
    assert generation["status"] == "succeeded", generation
    worker = app.state.worker
    assert worker.images.processes == settings_overrides["image_processes"]
    assert worker.images.started == (settings_overrides["image_processes"] > 0)
    asset = generation["asset"]
    assert (asset["width"], asset["height"], asset["mime"]) == (640, 480, "image/png")
    store = app.state.ctx.store
    assert await store.get(asset["key"]) == data
    assert await store.get(asset["key"] + ".thumb.webp") == process_image(data).thumbnail


async def test_thumbnails_are_made_in_a_thread_by_default(app, alice):
    run = await start_run(alice)
    [generation] = await generate_ok(alice, run["id"], "object")
    assert generation["status"] == "succeeded"
    assert app.state.worker.images.processes == 0
    assert not app.state.worker.images.started


@pytest.mark.parametrize("settings_overrides", [{"image_processes": 0}, {"image_processes": 1}])
async def test_unreadable_pixels_fail_the_row_and_leave_no_object(app, alice, settings_overrides):
    data = png()
    # A whole header (so the original's write starts) over pixels that end half-way.
    app.state.ctx.providers.register(FixedImageProvider(data[: len(data) // 2]), replace=True)
    run = await start_run(alice)
    [generation] = await generate_ok(alice, run["id"], "object")
    assert generation["status"] == "failed"
    assert generation["error"]["code"] == "provider_error"
    assert "unusable image" in generation["error"]["message"]
    assert generation["provider_request_id"] == "fixed-1"
    assert [info.key async for info in app.state.ctx.store.list_prefix("")] == []


async def test_unreadable_header_fails_before_anything_is_written(app, alice):
    app.state.ctx.providers.register(FixedImageProvider(b"<html>oops</html>"), replace=True)
    run = await start_run(alice)
    [generation] = await generate_ok(alice, run["id"], "object")
    assert generation["status"] == "failed"
    assert generation["error"]["code"] == "provider_error"
    assert [info.key async for info in app.state.ctx.store.list_prefix("")] == []


@pytest.mark.parametrize("settings_overrides", [{"image_processes": 1}])
async def test_a_dead_image_process_is_an_internal_error_and_leaves_no_object(app, alice):
    worker = app.state.worker

    async def dies(data: bytes):
        raise ImageProcessFailed("the image process stopped before it answered")

    worker.images.process = dies
    run = await start_run(alice)
    [generation] = await generate_ok(alice, run["id"], "object")
    assert generation["status"] == "failed"
    assert generation["error"]["code"] == "internal_error"
    assert [info.key async for info in app.state.ctx.store.list_prefix("")] == []


@pytest.mark.parametrize("settings_overrides", [{"image_processes": 1}])
async def test_stopping_the_worker_stops_its_image_processes(app, alice):
    run = await start_run(alice)
    await generate_ok(alice, run["id"], "object")
    worker = app.state.worker
    pool = worker.images._pool
    assert pool is not None
    processes = list(pool._processes.values())
    assert processes and all(p.is_alive() for p in processes)
    await worker.stop()
    assert not worker.images.started
    assert not any(p.is_alive() for p in processes)
