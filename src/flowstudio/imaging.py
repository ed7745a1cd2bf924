"""Inspecting stored images and making their WebP thumbnails (Pillow; no domain code)."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

THUMBNAIL_MAX_SIDE = 384
THUMBNAIL_MIME = "image/webp"
MAX_PIXELS = 8192 * 8192

_FORMATS = {
    "PNG": ("image/png", "png"),
    "JPEG": ("image/jpeg", "jpg"),
    "WEBP": ("image/webp", "webp"),
}


class UnsupportedImage(ValueError):
    """The bytes are not a PNG, JPEG or WebP image of a sensible size."""


@dataclass(frozen=True)
class ProcessedImage:
    mime: str
    ext: str
    width: int
    height: int
    size_bytes: int
    sha256: str
    thumbnail: bytes


def process_image(data: bytes) -> ProcessedImage:
    """Identify the image, hash it and render its thumbnail. CPU-bound: run it in a thread."""
    sha256 = hashlib.sha256(data).hexdigest()
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format not in _FORMATS:
                raise UnsupportedImage(f"{image.format or 'unknown'} images are not supported")
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise UnsupportedImage(f"{width}×{height} is larger than FlowStudio stores")
            mime, ext = _FORMATS[image.format]
            # draft() lets JPEG decode at a reduced scale; a no-op for other formats.
            image.draft("RGB", (THUMBNAIL_MAX_SIDE, THUMBNAIL_MAX_SIDE))
            thumb = image.convert("RGBA" if _has_alpha(image) else "RGB")
            thumb.thumbnail(
                (THUMBNAIL_MAX_SIDE, THUMBNAIL_MAX_SIDE),
                Image.Resampling.BILINEAR,
                reducing_gap=2.0,
            )
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise UnsupportedImage(f"not a readable image: {exc}") from None
    out = io.BytesIO()
    thumb.save(out, format="WEBP", quality=80, method=0)
    return ProcessedImage(
        mime=mime,
        ext=ext,
        width=width,
        height=height,
        size_bytes=len(data),
        sha256=sha256,
        thumbnail=out.getvalue(),
    )


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA") or (
        image.mode == "P" and "transparency" in image.info
    )
