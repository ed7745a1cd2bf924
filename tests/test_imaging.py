"""Image inspection, thumbnails, and the process pool that makes them off the event loop."""

from __future__ import annotations

import io
import math
import os
import signal

import pytest
from PIL import Image, ImageChops, ImageDraw, ImageStat

from flowstudio.imaging import (
    THUMBNAIL_MAX_SIDE,
    ImageProcessFailed,
    ImageProcessor,
    UnsupportedImage,
    inspect_image,
    process_image,
)


def encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def detailed(size=(1024, 768), mode="RGB") -> Image.Image:
    """Stripes and circles: fine detail that a careless downscale turns into moiré."""
    image = Image.new(mode, size, "white" if mode != "RGBA" else (255, 255, 255, 0))
    draw = ImageDraw.Draw(image)
    for x in range(0, size[0], 3):
        draw.line([(x, 0), (x, size[1])], fill=(x % 256, 40, 200, 255)[: len(mode)])
    for r in range(10, min(size) // 2, 7):
        draw.ellipse(
            [size[0] // 2 - r, size[1] // 2 - r, size[0] // 2 + r, size[1] // 2 + r],
            outline=(250, 200, r % 256, 255)[: len(mode)],
        )
    return image


def psnr(a: Image.Image, b: Image.Image) -> float:
    stat = ImageStat.Stat(ImageChops.difference(a.convert("RGB"), b.convert("RGB")))
    mse = sum(stat.sum2) / (3 * a.size[0] * a.size[1])
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def test_process_image_identifies_hashes_and_thumbnails():
    data = encode(detailed())
    image = process_image(data)
    assert (image.mime, image.ext, image.width, image.height) == ("image/png", "png", 1024, 768)
    assert image.size_bytes == len(data)
    with Image.open(io.BytesIO(image.thumbnail)) as thumb:
        assert thumb.format == "WEBP"
        assert thumb.size == (THUMBNAIL_MAX_SIDE, 288)


def test_thumbnail_stays_close_to_a_careful_downscale():
    original = detailed()
    reference = original.resize((384, 288), Image.Resampling.LANCZOS)
    with Image.open(io.BytesIO(process_image(encode(original)).thumbnail)) as thumb:
        # WebP at quality 80 alone costs a few dB; moiré or aliasing would cost far more.
        assert psnr(thumb, reference) > 25


@pytest.mark.parametrize(
    ("mode", "fmt", "thumb_mode"),
    [("RGBA", "PNG", "RGBA"), ("L", "PNG", "RGB"), ("P", "PNG", "RGB"), ("RGB", "JPEG", "RGB")],
)
def test_thumbnail_of_every_mode(mode, fmt, thumb_mode):
    source = detailed((800, 1200), "RGBA" if mode == "RGBA" else "RGB")
    if mode in ("L", "P"):
        source = source.convert(mode)
    image = process_image(encode(source, fmt))
    with Image.open(io.BytesIO(image.thumbnail)) as thumb:
        assert thumb.size == (256, THUMBNAIL_MAX_SIDE)
        assert thumb.mode == thumb_mode


def test_small_images_are_not_enlarged():
    image = process_image(encode(detailed((100, 50))))
    with Image.open(io.BytesIO(image.thumbnail)) as thumb:
        assert thumb.size == (100, 50)


def test_inspect_reads_the_header_only():
    data = encode(detailed())
    info = inspect_image(data[: len(data) // 2])  # the pixels are cut off; the header is whole
    assert (info.mime, info.ext, info.width, info.height) == ("image/png", "png", 1024, 768)
    with pytest.raises(UnsupportedImage):
        process_image(data[: len(data) // 2])


@pytest.mark.parametrize(
    "data",
    [
        b"not an image",
        encode(Image.new("RGB", (8, 8)), "GIF"),
        encode(Image.new("RGB", (8, 8)), "BMP"),
    ],
)
def test_unsupported_bytes_are_refused(data):
    with pytest.raises(UnsupportedImage):
        inspect_image(data)
    with pytest.raises(UnsupportedImage):
        process_image(data)


def test_processes_must_not_be_negative():
    with pytest.raises(ValueError):
        ImageProcessor(-1)


@pytest.mark.parametrize("processes", [0, 1, 2])
async def test_processor_gives_what_process_image_gives(processes):
    data = encode(detailed())
    processor = ImageProcessor(processes)
    try:
        assert await processor.process(data) == process_image(data)
        assert processor.started == (processes > 0)
    finally:
        await processor.close()


@pytest.mark.parametrize("processes", [0, 1])
async def test_processor_reports_an_unusable_image_as_such(processes):
    processor = ImageProcessor(processes)
    try:
        with pytest.raises(UnsupportedImage, match="not a readable image"):
            await processor.process(b"\x89PNG\r\n\x1a\n" + b"\0" * 100)
    finally:
        await processor.close()


def pool_pids(processor: ImageProcessor) -> set[int]:
    assert processor._pool is not None
    return set(processor._pool._processes)  # the executor's own record of its children


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc")
async def test_close_stops_the_pool_processes():
    processor = ImageProcessor(2)
    await processor.process(encode(detailed()))
    pids = pool_pids(processor)
    assert pids and all(not _gone(pid) for pid in pids)
    await processor.close()
    assert not processor.started
    assert all(_gone(pid) for pid in pids)


def _gone(pid: int) -> bool:
    """Exited (a zombie waiting for its parent counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


async def test_a_killed_image_process_fails_the_job_and_the_next_gets_a_new_pool():
    data = encode(detailed())
    processor = ImageProcessor(1)
    try:
        await processor.process(data)
        [pid] = pool_pids(processor)
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(ImageProcessFailed):
            # The executor may notice the death only once it has the next job in hand.
            for _ in range(50):
                await processor.process(data)
        assert await processor.process(data) == process_image(data)
    finally:
        await processor.close()
