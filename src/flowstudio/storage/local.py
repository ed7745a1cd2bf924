"""Object store backed by a local directory."""

from __future__ import annotations

import asyncio
import errno
import os
import secrets
import stat
import time
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO

from .base import (
    DEFAULT_CHUNK_SIZE,
    InvalidObjectKey,
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    StorageError,
    check_content_type,
)
from .keys import validate_key, validate_prefix

__all__ = ["LocalObjectStore"]

# Errors meaning "there is no regular file at this path".
_MISSING = (FileNotFoundError, NotADirectoryError, IsADirectoryError)
# Temporary files carry a character that is never allowed in keys, so they can
# neither collide with an object nor show up in listings.
_TMP_MARKER = "~"
_DELETE_ATTEMPTS = 3
_PUT_ATTEMPTS = 3


def _info(key: str, st: os.stat_result) -> ObjectInfo:
    return ObjectInfo(
        key=key,
        size=st.st_size,
        etag=f'"{st.st_ino:x}-{st.st_mtime_ns:x}-{st.st_size:x}"',
        last_modified=datetime.fromtimestamp(st.st_mtime_ns / 1e9, tz=UTC),
    )


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _is_regular(st: os.stat_result) -> bool:
    return stat.S_ISREG(st.st_mode)


def _is_valid_key(key: str) -> bool:
    try:
        validate_key(key)
    except InvalidObjectKey:
        return False
    return True


class LocalObjectStore(ObjectStore):
    """Stores each object as a file ``root/<key>``.

    Writes are atomic (temporary file in the target directory, fsync, rename).
    Blocking file I/O runs in worker threads. ``content_type`` is not persisted:
    callers serving files derive it from the key's extension.
    """

    scheme = "file"

    def __init__(self, root: str | os.PathLike[str], *, create: bool = True) -> None:
        self._root = Path(root).expanduser().absolute()
        if create:
            try:
                self._root.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StorageError(f"cannot create storage directory {self._root}: {exc}") from exc

    @property
    def root(self) -> Path:
        return self._root

    def __repr__(self) -> str:
        return f"LocalObjectStore(root={str(self._root)!r})"

    def path_for(self, key: str) -> Path:
        """File system path of ``key`` (validated; the file may not exist)."""
        return self._root.joinpath(*validate_key(key).split("/"))

    # -- writing -----------------------------------------------------------------

    def _put_sync(self, key: str, path: Path, data: bytes) -> ObjectInfo:
        tmp = path.with_name(f".{path.name}{_TMP_MARKER}{secrets.token_hex(8)}.tmp")
        attempt = 1
        while True:
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
                break
            except FileNotFoundError:
                # A concurrent delete_many pruned the freshly created directory.
                if attempt >= _PUT_ATTEMPTS:
                    raise
                attempt += 1
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        _fsync_dir(path.parent)
        return _info(key, path.stat())

    async def put(self, key: str, data: bytes, *, content_type: str) -> ObjectInfo:
        path = self.path_for(key)
        check_content_type(content_type)
        payload = bytes(data)
        try:
            return await asyncio.to_thread(self._put_sync, key, path, payload)
        except OSError as exc:
            raise StorageError(f"cannot write object {key}: {exc}") from exc

    # -- reading -----------------------------------------------------------------

    async def get(self, key: str) -> bytes:
        path = self.path_for(key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except _MISSING as exc:
            raise ObjectNotFound(key) from exc
        except OSError as exc:
            raise StorageError(f"cannot read object {key}: {exc}") from exc

    async def head(self, key: str) -> ObjectInfo:
        path = self.path_for(key)
        try:
            st = await asyncio.to_thread(path.stat)
        except _MISSING as exc:
            raise ObjectNotFound(key) from exc
        except OSError as exc:
            raise StorageError(f"cannot stat object {key}: {exc}") from exc
        if not _is_regular(st):
            raise ObjectNotFound(key)
        return _info(key, st)

    def open_stream(
        self, key: str, *, chunk_size: int = DEFAULT_CHUNK_SIZE
    ) -> AsyncIterator[bytes]:
        if chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        return self._stream(key, self.path_for(key), chunk_size)

    async def _stream(self, key: str, path: Path, chunk_size: int) -> AsyncIterator[bytes]:
        try:
            fh: BinaryIO = await asyncio.to_thread(open, path, "rb")
        except _MISSING as exc:
            raise ObjectNotFound(key) from exc
        except OSError as exc:
            raise StorageError(f"cannot open object {key}: {exc}") from exc
        try:
            while True:
                try:
                    chunk = await asyncio.to_thread(fh.read, chunk_size)
                except IsADirectoryError as exc:
                    raise ObjectNotFound(key) from exc
                except OSError as exc:
                    raise StorageError(f"cannot read object {key}: {exc}") from exc
                if not chunk:
                    return
                yield chunk
        finally:
            await asyncio.to_thread(fh.close)

    # -- listing -----------------------------------------------------------------

    def _list_sync(self, prefix: str) -> list[ObjectInfo]:
        base_rel = prefix[: prefix.rfind("/") + 1]  # "" or ends with "/"
        base = self._root.joinpath(*base_rel.rstrip("/").split("/")) if base_rel else self._root
        found: list[ObjectInfo] = []

        def onerror(exc: OSError) -> None:
            if isinstance(exc, _MISSING):
                return
            raise exc

        for dirpath, dirnames, filenames in os.walk(base, onerror=onerror):
            rel_dir = Path(dirpath).relative_to(self._root).as_posix()
            rel_dir = "" if rel_dir == "." else rel_dir + "/"
            # Only descend where keys matching the prefix can live.
            dirnames[:] = sorted(
                d
                for d in dirnames
                if (rel_dir + d + "/").startswith(prefix) or prefix.startswith(rel_dir + d + "/")
            )
            for name in filenames:
                key = rel_dir + name
                if not key.startswith(prefix) or not _is_valid_key(key):
                    continue
                try:
                    st = os.stat(os.path.join(dirpath, name))
                except _MISSING:
                    continue
                if _is_regular(st):
                    found.append(_info(key, st))
        found.sort(key=lambda info: info.key)
        return found

    def list_prefix(
        self, prefix: str, *, start_after: str | None = None
    ) -> AsyncIterator[ObjectInfo]:
        return self._list(validate_prefix(prefix), start_after)

    async def _list(self, prefix: str, start_after: str | None) -> AsyncIterator[ObjectInfo]:
        try:
            infos = await asyncio.to_thread(self._list_sync, prefix)
        except OSError as exc:
            raise StorageError(f"cannot list prefix {prefix!r}: {exc}") from exc
        for info in sorted(infos, key=lambda i: i.key):
            if start_after is None or info.key > start_after:
                yield info

    # -- deleting ----------------------------------------------------------------

    def _delete_sync(self, keys: list[str]) -> list[str]:
        failed: list[str] = []
        parents: set[Path] = set()
        for key in keys:
            path = self.path_for(key)
            for attempt in range(_DELETE_ATTEMPTS):
                try:
                    os.unlink(path)
                except (FileNotFoundError, NotADirectoryError):
                    pass
                except OSError as exc:
                    # EISDIR/EPERM for a directory: never an object, nothing to delete.
                    if exc.errno in (errno.EISDIR, errno.EPERM) and path.is_dir():
                        break
                    if attempt + 1 < _DELETE_ATTEMPTS:
                        time.sleep(0.05 * (attempt + 1))
                        continue
                    failed.append(key)
                    break
                parents.add(path.parent)
                break
        self._prune_empty_dirs(parents)
        return failed

    def _prune_empty_dirs(self, dirs: set[Path]) -> None:
        pending = sorted(dirs, key=lambda p: len(p.parts), reverse=True)
        seen: set[Path] = set()
        for start in pending:
            current = start
            while current != self._root and current not in seen and self._root in current.parents:
                seen.add(current)
                try:
                    os.rmdir(current)
                except OSError:
                    break
                current = current.parent

    async def delete_many(self, keys: Sequence[str]) -> list[str]:
        if isinstance(keys, str):
            raise TypeError("delete_many expects a sequence of keys, not a single string")
        unique = list(dict.fromkeys(validate_key(k) for k in keys))
        if not unique:
            return []
        try:
            return await asyncio.to_thread(self._delete_sync, unique)
        except OSError as exc:
            raise StorageError(f"cannot delete objects: {exc}") from exc

    # -- misc --------------------------------------------------------------------

    async def signed_get_url(
        self,
        key: str,
        *,
        expires_in: timedelta,
        filename: str | None = None,
        content_type: str | None = None,
    ) -> str | None:
        validate_key(key)
        return None

    def _check_sync(self) -> None:
        if not self._root.is_dir():
            raise StorageError(f"storage directory {self._root} does not exist")
        if not os.access(self._root, os.R_OK | os.W_OK | os.X_OK):
            raise StorageError(f"storage directory {self._root} is not readable and writable")

    async def check(self) -> None:
        try:
            await asyncio.to_thread(self._check_sync)
        except OSError as exc:
            raise StorageError(f"storage directory {self._root} unusable: {exc}") from exc

    async def close(self) -> None:
        return None
