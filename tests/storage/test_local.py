"""Local directory specific behaviour."""

from __future__ import annotations

import os
import shutil

import pytest

from flowstudio.storage import (
    InvalidObjectKey,
    LocalObjectStore,
    ObjectNotFound,
    StorageError,
)


def all_files(store: LocalObjectStore) -> list[str]:
    return sorted(
        p.relative_to(store.root).as_posix() for p in store.root.rglob("*") if p.is_file()
    )


def all_dirs(store: LocalObjectStore) -> list[str]:
    return sorted(p.relative_to(store.root).as_posix() for p in store.root.rglob("*") if p.is_dir())


async def test_path_for(local_object_store: LocalObjectStore) -> None:
    store = local_object_store
    assert store.path_for("u/1/a.png") == store.root / "u" / "1" / "a.png"
    for bad in ("../x", "/etc/passwd", "a/../../b", "a\\b", "a//b", "a\x00b"):
        with pytest.raises(InvalidObjectKey):
            store.path_for(bad)


async def test_put_writes_file_without_leftovers(local_object_store: LocalObjectStore) -> None:
    store = local_object_store
    await store.put("u/1/a.png", b"one", content_type="image/png")
    await store.put("u/1/a.png", b"two", content_type="image/png")
    assert all_files(store) == ["u/1/a.png"]
    assert store.path_for("u/1/a.png").read_bytes() == b"two"


async def test_listing_skips_foreign_and_temporary_files(
    local_object_store: LocalObjectStore,
) -> None:
    store = local_object_store
    await store.put("u/1/a.png", b"1", content_type="image/png")
    (store.root / "u" / "1" / ".a.png~0123.tmp").write_bytes(b"partial")
    (store.root / "u" / "1" / "with space.png").write_bytes(b"x")
    (store.root / "u" / "1" / "empty-dir").mkdir()
    assert [i.key async for i in store.list_prefix("")] == ["u/1/a.png"]


async def test_delete_prunes_empty_directories(local_object_store: LocalObjectStore) -> None:
    store = local_object_store
    await store.put("u/1/r/2/s/a.png", b"1", content_type="image/png")
    await store.put("u/1/r/2/s/b.png", b"1", content_type="image/png")
    await store.put("u/1/keep.png", b"1", content_type="image/png")
    assert await store.delete_many(["u/1/r/2/s/a.png"]) == []
    assert "u/1/r/2/s" in all_dirs(store)
    assert await store.delete_many(["u/1/r/2/s/b.png"]) == []
    assert all_dirs(store) == ["u", "u/1"]
    assert await store.delete_many(["u/1/keep.png"]) == []
    assert all_dirs(store) == []
    assert store.root.is_dir()


async def test_delete_of_directory_key_is_a_noop(local_object_store: LocalObjectStore) -> None:
    store = local_object_store
    await store.put("d/x", b"1", content_type="text/plain")
    assert await store.delete_many(["d"]) == []
    assert await store.get("d/x") == b"1"


async def test_put_conflicting_with_file_raises_storage_error(
    local_object_store: LocalObjectStore,
) -> None:
    store = local_object_store
    await store.put("a", b"1", content_type="text/plain")
    with pytest.raises(StorageError):
        await store.put("a/b", b"2", content_type="text/plain")
    with pytest.raises(ObjectNotFound):
        await store.get("a/b")
    await store.put("d/x", b"1", content_type="text/plain")
    with pytest.raises(StorageError):
        await store.put("d", b"2", content_type="text/plain")


async def test_check_fails_when_root_is_gone(local_object_store: LocalObjectStore) -> None:
    store = local_object_store
    await store.check()
    shutil.rmtree(store.root)
    with pytest.raises(StorageError):
        await store.check()


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
async def test_unreadable_file_raises_storage_error(local_object_store: LocalObjectStore) -> None:
    store = local_object_store
    await store.put("secret", b"1", content_type="text/plain")
    store.path_for("secret").chmod(0)
    try:
        with pytest.raises(StorageError) as exc_info:
            await store.get("secret")
        assert not isinstance(exc_info.value, ObjectNotFound)
    finally:
        store.path_for("secret").chmod(0o644)


async def test_list_prefix_below_a_file_is_empty(local_object_store: LocalObjectStore) -> None:
    store = local_object_store
    await store.put("u/a.png", b"1", content_type="image/png")
    assert [i.key async for i in store.list_prefix("u/a.png/")] == []
