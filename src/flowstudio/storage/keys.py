"""Object key layout and validation.

Keys are always built server side from identifiers, never taken from clients.
They are ``/`` separated relative paths restricted to ``[A-Za-z0-9._/-]`` so they
are safe both as file system paths below the local root and as S3 keys.

Layout::

    u/{user_id}/                                           user_prefix
    u/{user_id}/r/{run_id}/                                run_prefix
    u/{user_id}/r/{run_id}/{step_id}/{generation_id}.{ext}  generation_object_key
    u/{user_id}/r/{run_id}/{step_id}/upload-{sha256}.{ext}  upload_object_key
    {object_key}.thumb.webp                                 thumbnail_key
"""

from __future__ import annotations

import re
from uuid import UUID

from .base import InvalidObjectKey

__all__ = [
    "MAX_KEY_LENGTH",
    "THUMBNAIL_SUFFIX",
    "generation_object_key",
    "generation_object_prefix",
    "run_prefix",
    "thumbnail_key",
    "upload_object_key",
    "user_prefix",
    "validate_ext",
    "validate_key",
    "validate_prefix",
    "validate_step_id",
]

MAX_KEY_LENGTH = 1024
THUMBNAIL_SUFFIX = ".thumb.webp"

_KEY_CHARS = re.compile(r"[A-Za-z0-9._/-]+")
_STEP_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_EXT = re.compile(r"[a-z0-9]{1,10}")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def _describe(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def validate_key(key: str) -> str:
    """Return ``key`` unchanged if it is a valid object key, else raise.

    Refused: non-strings, empty keys, keys longer than :data:`MAX_KEY_LENGTH`,
    absolute keys, backslashes, control characters, any character outside
    ``[A-Za-z0-9._/-]``, and empty, ``.`` or ``..`` path segments.
    """
    if not isinstance(key, str):
        raise InvalidObjectKey(f"object key must be a string, got {type(key).__name__}")
    if not key:
        raise InvalidObjectKey("object key must not be empty")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidObjectKey(f"object key longer than {MAX_KEY_LENGTH} characters")
    if key.startswith("/"):
        raise InvalidObjectKey(f"object key must be relative: {_describe(key)}")
    if _KEY_CHARS.fullmatch(key) is None:
        raise InvalidObjectKey(
            f"object key contains characters outside [A-Za-z0-9._/-]: {_describe(key)}"
        )
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            raise InvalidObjectKey(
                f"object key has an empty, '.' or '..' segment: {_describe(key)}"
            )
    return key


def validate_prefix(prefix: str) -> str:
    """Validate a listing prefix: ``""`` or a valid key, optionally ending in ``/``."""
    if not isinstance(prefix, str):
        raise InvalidObjectKey(f"key prefix must be a string, got {type(prefix).__name__}")
    if prefix == "":
        return prefix
    validate_key(prefix[:-1] if prefix.endswith("/") else prefix)
    return prefix


def validate_step_id(step_id: str) -> str:
    """Step ids are lowercase slugs: ``^[a-z0-9][a-z0-9_-]{0,63}$``."""
    if not isinstance(step_id, str) or _STEP_ID.fullmatch(step_id) is None:
        raise InvalidObjectKey(f"invalid step id: {_describe(step_id)}")
    return step_id


def validate_ext(ext: str) -> str:
    """File extensions are given without dot, lowercase alphanumeric (``png``)."""
    if not isinstance(ext, str) or _EXT.fullmatch(ext) is None:
        raise InvalidObjectKey(
            f"invalid file extension (lowercase alphanumeric, no dot): {_describe(ext)}"
        )
    return ext


def _uuid(value: UUID | str, what: str) -> str:
    """Canonical (lowercase, hyphenated) form of a UUID given as UUID or string."""
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, str):
        try:
            return str(UUID(value))
        except ValueError:
            pass
    raise InvalidObjectKey(f"invalid {what}: {_describe(value)}")


def _sha256(value: str) -> str:
    if not isinstance(value, str) or _SHA256_HEX.fullmatch(value) is None:
        raise InvalidObjectKey(f"invalid sha256 hex digest (64 lowercase hex): {_describe(value)}")
    return value


def user_prefix(user_id: UUID) -> str:
    """``u/{user_id}/`` - every object of one user."""
    return f"u/{_uuid(user_id, 'user id')}/"


def run_prefix(user_id: UUID, run_id: UUID) -> str:
    """``u/{user_id}/r/{run_id}/`` - every object of one run."""
    return f"{user_prefix(user_id)}r/{_uuid(run_id, 'run id')}/"


def generation_object_key(
    *, user_id: UUID, run_id: UUID, step_id: str, generation_id: UUID, ext: str
) -> str:
    """``u/{user_id}/r/{run_id}/{step_id}/{generation_id}.{ext}``."""
    key = (
        f"{run_prefix(user_id, run_id)}{validate_step_id(step_id)}/"
        f"{_uuid(generation_id, 'generation id')}.{validate_ext(ext)}"
    )
    return validate_key(key)


def generation_object_prefix(
    *, user_id: UUID, run_id: UUID, step_id: str, generation_id: UUID
) -> str:
    """The prefix every object of one generation starts with (image and thumbnail)."""
    return validate_prefix(
        f"{run_prefix(user_id, run_id)}{validate_step_id(step_id)}/"
        f"{_uuid(generation_id, 'generation id')}."
    )


def upload_object_key(
    *, user_id: UUID, run_id: UUID, step_id: str, sha256_hex: str, ext: str
) -> str:
    """``u/{user_id}/r/{run_id}/{step_id}/upload-{sha256_hex}.{ext}``."""
    key = (
        f"{run_prefix(user_id, run_id)}{validate_step_id(step_id)}/"
        f"upload-{_sha256(sha256_hex)}.{validate_ext(ext)}"
    )
    return validate_key(key)


def thumbnail_key(object_key: str) -> str:
    """Key of the WebP thumbnail belonging to ``object_key``."""
    return validate_key(validate_key(object_key) + THUMBNAIL_SUFFIX)
