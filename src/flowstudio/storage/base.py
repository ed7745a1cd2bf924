"""Object store interface, shared value types and errors.

Every implementation stores opaque byte blobs under validated keys (see
:mod:`flowstudio.storage.keys`). All I/O methods are coroutines or async
iterators; implementations never let backend specific exceptions escape:
failures surface as :class:`StorageError` (or its subclass
:class:`ObjectNotFound`), malformed keys as :class:`InvalidObjectKey`.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import TracebackType
from typing import ClassVar, Self

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "check_content_type",
    "InvalidObjectKey",
    "ObjectInfo",
    "ObjectNotFound",
    "ObjectStore",
    "StorageError",
]

DEFAULT_CHUNK_SIZE = 256 * 1024

_CONTENT_TYPE = re.compile(r"[!-~][ -~]{0,254}")


def check_content_type(content_type: str) -> str:
    """Validate a MIME type given to ``put`` (printable ASCII, no line breaks)."""
    if not isinstance(content_type, str) or _CONTENT_TYPE.fullmatch(content_type) is None:
        raise ValueError(f"invalid content type: {content_type!r}")
    return content_type


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """Metadata of one stored object.

    ``etag`` is an opaque version tag (a quoted string, usable as an HTTP ``ETag``
    header value) that changes whenever the object is rewritten. ``last_modified``
    is timezone aware (UTC) when known.
    """

    key: str
    size: int
    etag: str | None
    last_modified: datetime | None


class StorageError(Exception):
    """The store is unreachable or an operation on it failed."""


class ObjectNotFound(StorageError):
    """No object exists under the requested key."""

    def __init__(self, key: str) -> None:
        super().__init__(f"object not found: {key}")
        self.key = key


class InvalidObjectKey(ValueError):
    """A key (or key component / prefix) does not satisfy the key rules."""


class ObjectStore(ABC):
    """Asynchronous object store.

    Keys are validated with :func:`flowstudio.storage.keys.validate_key` on every
    operation; an invalid key raises :class:`InvalidObjectKey` before any I/O.

    Stores can be used as async context managers (``close`` on exit).
    """

    scheme: ClassVar[str]

    @abstractmethod
    async def put(self, key: str, data: bytes, *, content_type: str) -> ObjectInfo:
        """Store ``data`` under ``key`` atomically, replacing any previous object.

        The returned ``etag`` equals the one later reported by :meth:`head`.
        ``last_modified`` may be ``None`` when the backend does not report it on
        upload (S3).
        """

    @abstractmethod
    async def get(self, key: str) -> bytes:
        """Return the full content of ``key``; :class:`ObjectNotFound` if missing."""

    @abstractmethod
    async def head(self, key: str) -> ObjectInfo:
        """Return metadata of ``key``; :class:`ObjectNotFound` if missing."""

    @abstractmethod
    def open_stream(
        self, key: str, *, chunk_size: int = DEFAULT_CHUNK_SIZE
    ) -> AsyncIterator[bytes]:
        """Stream the content of ``key`` in chunks of roughly ``chunk_size`` bytes.

        The key is validated immediately (:class:`InvalidObjectKey` is raised by
        the call itself); a missing object raises :class:`ObjectNotFound` on the
        first iteration.
        """

    @abstractmethod
    async def delete_many(self, keys: Sequence[str]) -> list[str]:
        """Delete ``keys``; keys that do not exist are silently ignored.

        All keys are validated before anything is deleted. Large lists are sent
        in batches and transient failures are retried. Returns the keys that
        could not be deleted (possibly conservatively: a batch that failed as a
        whole is reported entirely).
        """

    @abstractmethod
    def list_prefix(
        self, prefix: str, *, start_after: str | None = None
    ) -> AsyncIterator[ObjectInfo]:
        """Iterate over every object whose key starts with ``prefix`` (and, with
        ``start_after``, sorts after that key: a long listing can resume), in key order.

        ``prefix`` is a plain string prefix (``"u/1"`` also matches ``"u/12/x"``;
        use ``"u/1/"`` to restrict to one "directory"); ``""`` lists everything.
        The prefix is validated immediately. Objects whose names are not valid
        keys (foreign files, in-progress temporary files) are skipped.
        """

    @abstractmethod
    async def signed_get_url(
        self,
        key: str,
        *,
        expires_in: timedelta,
        filename: str | None = None,
        content_type: str | None = None,
    ) -> str | None:
        """Return a time limited URL to download ``key`` directly, if supported.

        Returns ``None`` when the store cannot hand out direct URLs (local
        directory); the caller must then serve the bytes itself.
        """

    @abstractmethod
    async def check(self) -> None:
        """Raise :class:`StorageError` if the store is not usable right now."""

    @abstractmethod
    async def close(self) -> None:
        """Release resources held by the store."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
