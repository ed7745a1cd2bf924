"""Object store on S3 and S3-compatible services (Cloudflare R2, MinIO, ...)."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import timedelta
from typing import Any

import obstore
import obstore.exceptions
from obstore.store import S3Store

from .base import (
    DEFAULT_CHUNK_SIZE,
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    StorageError,
    check_content_type,
)
from .keys import validate_key, validate_prefix

__all__ = ["S3ObjectStore"]

logger = logging.getLogger(__name__)

MAX_DELETE_BATCH = 1000  # S3 DeleteObjects limit
MAX_SIGNED_URL_EXPIRY = timedelta(days=7)  # SigV4 limit
# Listing this (never existing) prefix costs one small request and still
# proves that the endpoint answers, the bucket exists and credentials work.
_PROBE_PREFIX = "flowstudio-readiness-probe"

_ENDPOINT_ENV_VARS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ENDPOINT")
_DEFAULT_CLIENT_OPTIONS: dict[str, Any] = {
    "connect_timeout": timedelta(seconds=5),
    # Whole request including the body: streamed downloads must finish within it.
    "timeout": timedelta(seconds=300),
}
_DEFAULT_RETRY_CONFIG: dict[str, Any] = {
    "max_retries": 3,
    "retry_timeout": timedelta(seconds=30),
    "backoff": {
        "init_backoff": timedelta(milliseconds=100),
        "max_backoff": timedelta(seconds=2),
        "base": 2,
    },
}

_NOT_FOUND = (FileNotFoundError, obstore.exceptions.NotFoundError)


def _summary(exc: BaseException) -> str:
    """First line of a backend error (obstore appends long debug dumps)."""
    text = str(exc).strip().split("\n", 1)[0] or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


class _StaticCredentials:
    """obstore credential provider returning fixed, never expiring keys."""

    def __init__(self, access_key_id: str, secret_access_key: str, token: str | None) -> None:
        self._credential = {
            "access_key_id": access_key_id,
            "secret_access_key": secret_access_key,
            "token": token,
            "expires_at": None,
        }

    def __call__(self) -> dict[str, Any]:
        return self._credential

    def __repr__(self) -> str:
        return "_StaticCredentials(<redacted>)"


class S3ObjectStore(ObjectStore):
    """Object store on an S3 bucket via ``obstore``.

    ``prefix`` (optional) is prepended to every key transparently: keys passed to
    and returned from this class never include it.

    Credentials, region and endpoint not given explicitly are read by obstore
    from the usual ``AWS_*`` environment variables (or instance metadata).
    With a custom ``endpoint`` path-style requests are used, and plain HTTP is
    allowed when the endpoint is ``http://``.
    """

    scheme = "s3"

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str | None = None,
        endpoint: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        session_token: str | None = None,
        client_options: Mapping[str, Any] | None = None,
        retry_config: Mapping[str, Any] | None = None,
        check_timeout: float = 5.0,
    ) -> None:
        if not bucket:
            raise ValueError("S3 bucket name must not be empty")
        if (access_key_id is None) != (secret_access_key is None):
            raise ValueError("access_key_id and secret_access_key must be given together")
        if check_timeout <= 0:
            raise ValueError("check_timeout must be positive")
        prefix = (prefix or "").strip("/")
        if prefix:
            validate_key(prefix)

        self._bucket = bucket
        self._prefix = prefix
        self._endpoint = endpoint
        self._region = region
        self._check_timeout = check_timeout

        config: dict[str, Any] = {}
        options: dict[str, Any] = dict(_DEFAULT_CLIENT_OPTIONS)
        if endpoint:
            config["endpoint"] = endpoint.rstrip("/")
            # AWS_ENDPOINT_URL_S3 would otherwise take precedence over `endpoint`.
            config["aws_endpoint_url_s3"] = endpoint.rstrip("/")
            config["virtual_hosted_style_request"] = False
        effective_endpoint = endpoint or next(
            (os.environ[name] for name in _ENDPOINT_ENV_VARS if os.environ.get(name)), ""
        )
        if effective_endpoint.lower().startswith("http://"):
            options["allow_http"] = True
        if region:
            config["region"] = region
        credentials: _StaticCredentials | None = None
        if access_key_id is not None and secret_access_key is not None:
            # A provider (rather than config keys) keeps obstore from mixing the
            # explicit keys with e.g. an AWS_SESSION_TOKEN from the environment.
            credentials = _StaticCredentials(access_key_id, secret_access_key, session_token)
        elif session_token is not None:
            config["session_token"] = session_token
        options.update(client_options or {})
        retry = dict(_DEFAULT_RETRY_CONFIG)
        retry.update(retry_config or {})

        self._config = config
        self._client_options = options
        self._credentials = credentials
        try:
            self._store = S3Store(
                bucket,
                prefix=prefix or None,
                config=config,  # type: ignore[arg-type]
                client_options=options,  # type: ignore[arg-type]
                retry_config=retry,  # type: ignore[arg-type]
                credential_provider=credentials,  # type: ignore[arg-type]
            )
        except Exception as exc:
            raise ValueError(f"invalid S3 configuration: {_summary(exc)}") from exc
        self._probe: S3Store | None = None

    # -- properties --------------------------------------------------------------

    @property
    def bucket(self) -> str:
        return self._bucket

    @property
    def prefix(self) -> str:
        """Key prefix inside the bucket ("" when none), without slashes at the ends."""
        return self._prefix

    @property
    def endpoint(self) -> str | None:
        return self._endpoint

    @property
    def region(self) -> str | None:
        return self._region

    def __repr__(self) -> str:
        return (
            f"S3ObjectStore(bucket={self._bucket!r}, prefix={self._prefix!r}, "
            f"endpoint={self._endpoint!r}, region={self._region!r})"
        )

    # -- helpers -----------------------------------------------------------------

    def _error(self, exc: BaseException, action: str, key: str | None = None) -> StorageError:
        if key is not None and isinstance(exc, _NOT_FOUND):
            return ObjectNotFound(key)
        where = f" for {key!r}" if key is not None else ""
        return StorageError(f"S3 {action}{where} failed (bucket {self._bucket!r}): {_summary(exc)}")

    # -- operations --------------------------------------------------------------

    async def put(self, key: str, data: bytes, *, content_type: str) -> ObjectInfo:
        validate_key(key)
        check_content_type(content_type)
        payload = bytes(data)
        try:
            result = await obstore.put_async(
                self._store,
                key,
                payload,
                attributes={"Content-Type": content_type},
                use_multipart=False,
            )
        except Exception as exc:
            raise self._error(exc, "put") from exc
        return ObjectInfo(key=key, size=len(payload), etag=result.get("e_tag"), last_modified=None)

    async def get(self, key: str) -> bytes:
        validate_key(key)
        try:
            result = await obstore.get_async(self._store, key)
            return bytes(await result.bytes_async())
        except Exception as exc:
            raise self._error(exc, "get", key) from exc

    async def head(self, key: str) -> ObjectInfo:
        validate_key(key)
        try:
            meta = await obstore.head_async(self._store, key)
        except Exception as exc:
            raise self._error(exc, "head", key) from exc
        return ObjectInfo(
            key=key,
            size=meta["size"],
            etag=meta.get("e_tag"),
            last_modified=meta.get("last_modified"),
        )

    def open_stream(
        self, key: str, *, chunk_size: int = DEFAULT_CHUNK_SIZE
    ) -> AsyncIterator[bytes]:
        validate_key(key)
        if chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        return self._stream(key, chunk_size)

    async def _stream(self, key: str, chunk_size: int) -> AsyncIterator[bytes]:
        try:
            result = await obstore.get_async(self._store, key)
            stream = result.stream(min_chunk_size=chunk_size)
        except Exception as exc:
            raise self._error(exc, "get", key) from exc
        while True:
            try:
                chunk = await stream.__anext__()
            except StopAsyncIteration:
                return
            except Exception as exc:
                raise self._error(exc, "get", key) from exc
            yield bytes(chunk)

    def list_prefix(
        self, prefix: str, *, start_after: str | None = None
    ) -> AsyncIterator[ObjectInfo]:
        return self._list(validate_prefix(prefix), start_after)

    async def _list(self, prefix: str, start_after: str | None) -> AsyncIterator[ObjectInfo]:
        # obstore lists whole path segments ("u/1" means "u/1/"), so list the
        # enclosing "directory" and filter for plain string prefix semantics.
        base = prefix[: prefix.rfind("/") + 1]
        try:
            # S3 lists in key order, and from after `offset` (StartAfter) when given.
            stream = obstore.list(self._store, base or None, offset=start_after, chunk_size=1000)
        except Exception as exc:
            raise self._error(exc, "list") from exc
        while True:
            try:
                chunk = await stream.__anext__()
            except StopAsyncIteration:
                return
            except Exception as exc:
                raise self._error(exc, "list") from exc
            for meta in chunk:
                key = meta["path"]
                if not key.startswith(prefix):
                    continue
                try:
                    validate_key(key)
                except ValueError:
                    continue
                yield ObjectInfo(
                    key=key,
                    size=meta["size"],
                    etag=meta.get("e_tag"),
                    last_modified=meta.get("last_modified"),
                )

    async def _delete_batch(self, batch: list[str]) -> bool:
        # Transient failures are retried by obstore (the client's RetryConfig), the one retry
        # layer; what still fails is reported, and the caller records the keys to try later.
        try:
            await obstore.delete_async(self._store, batch)
        except _NOT_FOUND:
            pass
        except Exception as exc:
            logger.warning("S3 delete of %d keys failed: %s", len(batch), _summary(exc))
            return False
        return True

    async def delete_many(self, keys: Sequence[str]) -> list[str]:
        if isinstance(keys, str):
            raise TypeError("delete_many expects a sequence of keys, not a single string")
        unique = list(dict.fromkeys(validate_key(k) for k in keys))
        failed: list[str] = []
        failed_batches_in_row = 0
        for start in range(0, len(unique), MAX_DELETE_BATCH):
            batch = unique[start : start + MAX_DELETE_BATCH]
            # Two whole batches failing in a row: the store is down, stop hammering it.
            if failed_batches_in_row >= 2 or not await self._delete_batch(batch):
                failed.extend(batch)
                failed_batches_in_row += 1
            else:
                failed_batches_in_row = 0
        return failed

    async def signed_get_url(
        self,
        key: str,
        *,
        expires_in: timedelta,
        filename: str | None = None,
        content_type: str | None = None,
    ) -> str | None:
        """Presigned GET URL for ``key``.

        obstore cannot sign extra query parameters, so ``filename`` and
        ``content_type`` are not applied (no ``response-content-disposition``);
        the object is served with the Content-Type given to :meth:`put`.
        """
        validate_key(key)
        if not timedelta(0) < expires_in <= MAX_SIGNED_URL_EXPIRY:
            raise ValueError("expires_in must be positive and at most 7 days")
        try:
            return await obstore.sign_async(self._store, "GET", key, expires_in)
        except Exception as exc:
            raise self._error(exc, "sign") from exc

    def _probe_store(self) -> S3Store:
        if self._probe is None:
            timeout = timedelta(seconds=self._check_timeout)
            options = dict(self._client_options)
            options["connect_timeout"] = min(timeout, timedelta(seconds=5))
            options["timeout"] = timeout
            self._probe = S3Store(
                self._bucket,
                prefix=self._prefix or None,
                config=self._config,  # type: ignore[arg-type]
                client_options=options,  # type: ignore[arg-type]
                retry_config={"max_retries": 0, "retry_timeout": timeout},
                credential_provider=self._credentials,  # type: ignore[arg-type]
            )
        return self._probe

    async def _probe_once(self) -> None:
        stream = obstore.list(self._probe_store(), _PROBE_PREFIX, chunk_size=1)
        try:
            await stream.__anext__()
        except StopAsyncIteration:
            pass

    async def check(self) -> None:
        try:
            await asyncio.wait_for(self._probe_once(), timeout=self._check_timeout + 1)
        except TimeoutError as exc:
            raise StorageError(
                f"S3 bucket {self._bucket!r} did not answer within {self._check_timeout:g}s"
            ) from exc
        except Exception as exc:
            raise self._error(exc, "check") from exc

    async def close(self) -> None:
        # obstore keeps no explicit connections to close; drop the probe client.
        self._probe = None
