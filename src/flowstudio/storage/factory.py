"""Build an :class:`ObjectStore` from a storage URL.

Supported forms::

    file:///absolute/dir
    file://relative/dir                      (relative to the working directory)
    s3://bucket
    s3://bucket?endpoint=http://host:9000&region=auto&prefix=some/prefix
    s3://bucket/some/prefix                  (same as ?prefix=some/prefix)
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from .base import ObjectStore
from .local import LocalObjectStore
from .s3 import S3ObjectStore

__all__ = ["open_object_store"]

_S3_PARAMS = frozenset({"endpoint", "region", "prefix"})
_BUCKET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")


def _redact(url: str) -> str:
    """The URL without query string or user info, safe to put in error messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}{parts.path}"


def _open_file(url: str) -> LocalObjectStore:
    rest = url[len("file://") :] if url.lower().startswith("file://") else url[len("file:") :]
    if "?" in rest or "#" in rest:
        raise ValueError(f"file storage URL takes no query or fragment: {_redact(url)}")
    path = unquote(rest)
    if not path or path == "/":
        raise ValueError(f"file storage URL needs a directory, e.g. file:///var/lib/x: {url!r}")
    if "\x00" in path:
        raise ValueError("file storage URL contains a NUL character")
    # "file:///abs" -> "/abs" (absolute); "file://rel/dir" -> "rel/dir" (relative to cwd).
    root = Path(path)
    if not root.is_absolute():
        root = Path.cwd() / root
    return LocalObjectStore(root)


def _open_s3(
    url: str,
    *,
    access_key_id: str | None,
    secret_access_key: str | None,
    region: str | None,
) -> S3ObjectStore:
    parts = urlsplit(url)
    bucket = parts.netloc
    if "@" in bucket or ":" in bucket:
        raise ValueError(
            "s3 storage URL must not contain credentials or a port in the bucket part; "
            "pass credentials separately and the endpoint as ?endpoint=..."
        )
    if not bucket or _BUCKET.fullmatch(bucket) is None:
        raise ValueError(f"s3 storage URL needs a valid bucket name: {_redact(url)}")
    if parts.fragment:
        raise ValueError(f"s3 storage URL takes no fragment: {_redact(url)}")

    params: dict[str, str] = {}
    for name, values in parse_qs(parts.query, keep_blank_values=True, strict_parsing=False).items():
        if name not in _S3_PARAMS:
            allowed = ", ".join(sorted(_S3_PARAMS))
            raise ValueError(f"unknown s3 storage URL parameter {name!r} (allowed: {allowed})")
        if len(values) != 1:
            raise ValueError(f"s3 storage URL parameter {name!r} given more than once")
        params[name] = values[0]

    path_prefix = unquote(parts.path).strip("/")
    query_prefix = params.get("prefix", "").strip("/")
    if path_prefix and query_prefix:
        raise ValueError("give the s3 key prefix either as URL path or as ?prefix=, not both")
    prefix = path_prefix or query_prefix or None

    endpoint = params.get("endpoint") or None
    if endpoint is not None:
        ep = urlsplit(endpoint)
        if ep.scheme not in ("http", "https") or not ep.netloc:
            raise ValueError(f"s3 endpoint must be an http:// or https:// URL, got {endpoint!r}")

    return S3ObjectStore(
        bucket,
        prefix=prefix,
        endpoint=endpoint,
        region=region or params.get("region") or None,
        access_key_id=access_key_id,
        secret_access_key=secret_access_key,
    )


def open_object_store(
    url: str,
    *,
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
    region: str | None = None,
) -> ObjectStore:
    """Create the object store described by ``url``.

    For ``s3://`` URLs credentials come from ``access_key_id`` /
    ``secret_access_key`` when given, else from the standard ``AWS_*``
    environment variables (read by obstore). An explicit ``region`` argument
    wins over ``?region=``. Raises :class:`ValueError` for malformed URLs and
    unsupported schemes.
    """
    if not isinstance(url, str) or not url.strip():
        raise ValueError("storage URL must be a non-empty string")
    url = url.strip()
    scheme, sep, _ = url.partition(":")
    scheme = scheme.lower()
    if not sep or not scheme:
        raise ValueError(f"storage URL needs a scheme (file:// or s3://), got {url!r}")
    if scheme == "file":
        return _open_file(url)
    if scheme == "s3":
        if not url.lower().startswith("s3://"):
            raise ValueError(f"s3 storage URL must look like s3://bucket: {_redact(url)}")
        return _open_s3(
            url,
            access_key_id=access_key_id,
            secret_access_key=secret_access_key,
            region=region,
        )
    raise ValueError(
        f"unsupported storage URL scheme {scheme!r}; use file:///path/to/dir or s3://bucket"
    )
