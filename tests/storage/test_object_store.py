"""Behaviour shared by every ObjectStore implementation (runs on local and S3)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from flowstudio.storage import (
    InvalidObjectKey,
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    StorageError,
)

BAD_KEYS = ["../x", "/etc/passwd", "a/../../b", "a\\b", "a//b", "a\x00b", "", "a/./b"]


async def collect(it: AsyncIterator[bytes]) -> list[bytes]:
    return [chunk async for chunk in it]


async def list_keys(store: ObjectStore, prefix: str) -> list[str]:
    return [info.key async for info in store.list_prefix(prefix)]


async def put_many(store: ObjectStore, keys: list[str], concurrency: int = 32) -> None:
    semaphore = asyncio.Semaphore(concurrency)

    async def put_one(key: str) -> None:
        async with semaphore:
            await store.put(key, b"", content_type="image/png")

    await asyncio.gather(*(put_one(key) for key in keys))


async def test_put_get_head_roundtrip(object_store: ObjectStore) -> None:
    data = b"\x89PNG\r\n\x1a\n" + os.urandom(1000)
    before = datetime.now(UTC) - timedelta(minutes=5)
    put_info = await object_store.put("u/1/r/2/s/a.png", data, content_type="image/png")
    assert put_info.key == "u/1/r/2/s/a.png"
    assert put_info.size == len(data)
    assert put_info.etag

    assert await object_store.get("u/1/r/2/s/a.png") == data

    info = await object_store.head("u/1/r/2/s/a.png")
    assert isinstance(info, ObjectInfo)
    assert info.key == "u/1/r/2/s/a.png"
    assert info.size == len(data)
    assert info.etag == put_info.etag
    assert info.last_modified is not None
    assert info.last_modified.utcoffset() == timedelta(0)
    assert before <= info.last_modified <= datetime.now(UTC) + timedelta(minutes=5)


async def test_put_accepts_empty_object(object_store: ObjectStore) -> None:
    await object_store.put("empty", b"", content_type="application/octet-stream")
    assert await object_store.get("empty") == b""
    assert (await object_store.head("empty")).size == 0
    assert await collect(object_store.open_stream("empty")) in ([], [b""])


async def test_overwrite_replaces_content(object_store: ObjectStore) -> None:
    first = await object_store.put("k/x.webp", b"first version", content_type="image/webp")
    second = await object_store.put("k/x.webp", b"second", content_type="image/webp")
    assert await object_store.get("k/x.webp") == b"second"
    info = await object_store.head("k/x.webp")
    assert info.size == len(b"second")
    assert info.etag == second.etag != first.etag
    assert await list_keys(object_store, "k/") == ["k/x.webp"]


async def test_missing_key_raises_not_found(object_store: ObjectStore) -> None:
    with pytest.raises(ObjectNotFound):
        await object_store.get("nope/missing.png")
    with pytest.raises(ObjectNotFound):
        await object_store.head("nope/missing.png")
    with pytest.raises(ObjectNotFound):
        await collect(object_store.open_stream("nope/missing.png"))
    assert issubclass(ObjectNotFound, StorageError)


async def test_directory_like_key_is_not_an_object(object_store: ObjectStore) -> None:
    await object_store.put("dir/file", b"x", content_type="text/plain")
    with pytest.raises(ObjectNotFound):
        await object_store.get("dir")
    with pytest.raises(ObjectNotFound):
        await object_store.head("dir")
    with pytest.raises(ObjectNotFound):
        await collect(object_store.open_stream("dir"))


async def test_open_stream_multi_megabyte(object_store: ObjectStore) -> None:
    data = os.urandom(3 * 1024 * 1024 + 12345)
    await object_store.put("big/blob.bin", data, content_type="application/octet-stream")
    chunks = await collect(object_store.open_stream("big/blob.bin", chunk_size=256 * 1024))
    assert len(chunks) >= 4
    assert all(isinstance(c, bytes) for c in chunks)
    assert b"".join(chunks) == data


async def test_open_stream_can_be_abandoned(object_store: ObjectStore) -> None:
    data = os.urandom(1024 * 1024)
    await object_store.put("big/partial.bin", data, content_type="application/octet-stream")
    stream = object_store.open_stream("big/partial.bin", chunk_size=64 * 1024)
    first = await anext(stream)
    assert data.startswith(first)
    await stream.aclose()  # type: ignore[attr-defined]


async def test_list_prefix_exact(object_store: ObjectStore) -> None:
    keys = [
        "u/1/a.png",
        "u/1/r/x/b.png",
        "u/12/c.png",
        "u/2/d.png",
        "u1/e.png",
        "v/f.png",
    ]
    for key in keys:
        await object_store.put(key, key.encode(), content_type="image/png")

    assert await list_keys(object_store, "u/1/") == ["u/1/a.png", "u/1/r/x/b.png"]
    assert await list_keys(object_store, "u/12/") == ["u/12/c.png"]
    assert await list_keys(object_store, "u/1") == ["u/1/a.png", "u/1/r/x/b.png", "u/12/c.png"]
    assert await list_keys(object_store, "u/") == keys[:4]
    assert await list_keys(object_store, "u") == keys[:5]
    assert await list_keys(object_store, "") == keys
    assert await list_keys(object_store, "u/1/a.png") == ["u/1/a.png"]
    assert await list_keys(object_store, "u/1/a") == ["u/1/a.png"]
    assert await list_keys(object_store, "u/3/") == []
    assert await list_keys(object_store, "nothing/here/") == []

    infos = [info async for info in object_store.list_prefix("u/12/")]
    assert infos[0].size == len(b"u/12/c.png")
    assert infos[0].etag == (await object_store.head("u/12/c.png")).etag
    assert infos[0].last_modified is not None and infos[0].last_modified.tzinfo is not None


async def test_delete_many_existing_and_missing(object_store: ObjectStore) -> None:
    for key in ["d/a", "d/b", "d/sub/c", "keep/x"]:
        await object_store.put(key, b"1", content_type="text/plain")

    failed = await object_store.delete_many(["d/a", "d/missing", "d/sub/c", "d/a", "nope/x"])
    assert failed == []
    assert await list_keys(object_store, "") == ["d/b", "keep/x"]
    with pytest.raises(ObjectNotFound):
        await object_store.head("d/a")

    assert await object_store.delete_many([]) == []
    assert await object_store.delete_many(["d/b"]) == []
    assert await list_keys(object_store, "") == ["keep/x"]
    # the key can be written again after its directory was cleaned up
    await object_store.put("d/a", b"again", content_type="text/plain")
    assert await object_store.get("d/a") == b"again"


async def test_delete_many_more_keys_than_one_batch(object_store: ObjectStore) -> None:
    keys = [f"bulk/{i // 100:02d}/{i:04d}.png" for i in range(1500)]
    # Writing 1500 objects to moto takes seconds; existing keys on both sides of
    # the 1000-key batch boundary are enough, the rest are (allowed) misses.
    existing = [key for i, key in enumerate(keys) if i % 10 == 0 or i in (999, 1000, 1499)]
    await put_many(object_store, [*existing, "other/keep.png"])
    assert len(await list_keys(object_store, "bulk/")) == len(existing)

    failed = await object_store.delete_many(keys)
    assert failed == []
    assert await list_keys(object_store, "") == ["other/keep.png"]


@pytest.mark.parametrize("bad", BAD_KEYS)
async def test_invalid_keys_refused_everywhere(object_store: ObjectStore, bad: str) -> None:
    with pytest.raises(InvalidObjectKey):
        await object_store.put(bad, b"x", content_type="text/plain")
    with pytest.raises(InvalidObjectKey):
        await object_store.get(bad)
    with pytest.raises(InvalidObjectKey):
        await object_store.head(bad)
    with pytest.raises(InvalidObjectKey):
        await collect(object_store.open_stream(bad))
    with pytest.raises(InvalidObjectKey):
        await object_store.delete_many(["fine/key", bad])
    with pytest.raises(InvalidObjectKey):
        await object_store.signed_get_url(bad, expires_in=timedelta(minutes=5))
    if bad:  # "" is the valid "everything" prefix
        with pytest.raises(InvalidObjectKey):
            await collect(object_store.list_prefix(bad))  # type: ignore[arg-type]


async def test_invalid_key_on_delete_deletes_nothing(object_store: ObjectStore) -> None:
    await object_store.put("fine/key", b"x", content_type="text/plain")
    with pytest.raises(InvalidObjectKey):
        await object_store.delete_many(["fine/key", "../escape"])
    assert await object_store.get("fine/key") == b"x"


async def test_bad_content_type_refused(object_store: ObjectStore) -> None:
    with pytest.raises(ValueError):
        await object_store.put("a", b"x", content_type="image/png\r\nX-Evil: 1")
    with pytest.raises(ValueError):
        await object_store.put("a", b"x", content_type="")


async def test_signed_get_url(object_store: ObjectStore) -> None:
    data = os.urandom(2048)
    await object_store.put("s/img.png", data, content_type="image/png")
    url = await object_store.signed_get_url(
        "s/img.png", expires_in=timedelta(minutes=5), filename="cat.png", content_type="image/png"
    )
    if object_store.scheme == "file":
        assert url is None
        return
    assert url is not None
    assert "X-Amz-Signature=" in url
    async with httpx.AsyncClient() as client:
        response = await client.get(url)
    assert response.status_code == 200
    assert response.content == data
    assert response.headers["content-type"] == "image/png"


async def test_check_succeeds(object_store: ObjectStore) -> None:
    await object_store.check()


async def test_context_manager(object_store: ObjectStore) -> None:
    async with object_store as store:
        await store.put("cm", b"1", content_type="text/plain")
    assert object_store.scheme in ("file", "s3")
