"""Object storage for generated images: a local directory or an S3-compatible bucket.

This package is infrastructure and does not depend on the rest of flowstudio.
"""

from .base import (
    DEFAULT_CHUNK_SIZE,
    InvalidObjectKey,
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    StorageError,
)
from .factory import open_object_store
from .keys import (
    MAX_KEY_LENGTH,
    THUMBNAIL_SUFFIX,
    generation_object_key,
    run_prefix,
    thumbnail_key,
    upload_object_key,
    user_prefix,
    validate_ext,
    validate_key,
    validate_prefix,
    validate_step_id,
)
from .local import LocalObjectStore
from .s3 import S3ObjectStore

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "MAX_KEY_LENGTH",
    "THUMBNAIL_SUFFIX",
    "InvalidObjectKey",
    "LocalObjectStore",
    "ObjectInfo",
    "ObjectNotFound",
    "ObjectStore",
    "S3ObjectStore",
    "StorageError",
    "generation_object_key",
    "open_object_store",
    "run_prefix",
    "thumbnail_key",
    "upload_object_key",
    "user_prefix",
    "validate_ext",
    "validate_key",
    "validate_prefix",
    "validate_step_id",
]
