"""S3 specific behaviour: key prefix, error translation, batching, health check."""

from __future__ import annotations

import socket
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest

from flowstudio.storage import (
    ObjectNotFound,
    S3ObjectStore,
    StorageError,
    open_object_store,
)
from flowstudio.storage import s3 as s3_module
from tests.fixtures.storage import (
    S3_TEST_CREDENTIALS,
    S3_TEST_PREFIX,
    S3_TEST_REGION,
    s3_storage_url,
)


def unused_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def dead_store(**kwargs: Any) -> S3ObjectStore:
    """An S3 store pointing at a local port where nothing listens, failing fast."""
    return S3ObjectStore(
        "bucket",
        endpoint=f"http://127.0.0.1:{unused_port()}",
        region=S3_TEST_REGION,
        retry_config={"max_retries": 0},
        check_timeout=1.0,
        **S3_TEST_CREDENTIALS,
        **kwargs,
    )


def bucket_keys(s3_client: Any, bucket: str) -> list[str]:
    response = s3_client.list_objects_v2(Bucket=bucket)
    return sorted(obj["Key"] for obj in response.get("Contents", []))


async def test_prefix_is_transparent(
    s3_object_store: S3ObjectStore, s3_client: Any, s3_bucket: str
) -> None:
    await s3_object_store.put("u/1/a.png", b"png", content_type="image/png")
    assert bucket_keys(s3_client, s3_bucket) == [f"{S3_TEST_PREFIX}/u/1/a.png"]
    head = s3_client.head_object(Bucket=s3_bucket, Key=f"{S3_TEST_PREFIX}/u/1/a.png")
    assert head["ContentType"] == "image/png"

    # Objects outside the store prefix are invisible.
    s3_client.put_object(Bucket=s3_bucket, Key="u/1/outside.png", Body=b"x")
    s3_client.put_object(Bucket=s3_bucket, Key=f"{S3_TEST_PREFIX}-sibling/u/1/x.png", Body=b"x")
    assert [i.key async for i in s3_object_store.list_prefix("")] == ["u/1/a.png"]
    with pytest.raises(ObjectNotFound):
        await s3_object_store.get("u/1/outside.png")

    assert await s3_object_store.delete_many(["u/1/a.png"]) == []
    assert bucket_keys(s3_client, s3_bucket) == [
        f"{S3_TEST_PREFIX}-sibling/u/1/x.png",
        "u/1/outside.png",
    ]


async def test_store_without_prefix(moto_server_url: str, s3_bucket: str, s3_client: Any) -> None:
    store = open_object_store(s3_storage_url(moto_server_url, s3_bucket), **S3_TEST_CREDENTIALS)
    await store.put("a/b.png", b"1", content_type="image/png")
    assert bucket_keys(s3_client, s3_bucket) == ["a/b.png"]
    assert [i.key async for i in store.list_prefix("a/")] == ["a/b.png"]


async def test_foreign_invalid_keys_are_not_listed(
    s3_object_store: S3ObjectStore, s3_client: Any, s3_bucket: str
) -> None:
    await s3_object_store.put("u/ok.png", b"1", content_type="image/png")
    s3_client.put_object(Bucket=s3_bucket, Key=f"{S3_TEST_PREFIX}/u/has space.png", Body=b"x")
    assert [i.key async for i in s3_object_store.list_prefix("u/")] == ["u/ok.png"]


async def test_credentials_from_environment(
    moto_server_url: str, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "env-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    store = open_object_store(s3_storage_url(moto_server_url, s3_bucket))
    await store.put("env.txt", b"from env", content_type="text/plain")
    assert await store.get("env.txt") == b"from env"
    url = await store.signed_get_url("env.txt", expires_in=timedelta(minutes=1))
    assert url is not None and "Credential=env-key" in url


async def test_signed_url_expiry_bounds(s3_object_store: S3ObjectStore) -> None:
    for bad in (timedelta(0), timedelta(seconds=-1), timedelta(days=8)):
        with pytest.raises(ValueError):
            await s3_object_store.signed_get_url("a", expires_in=bad)


async def test_check_fails_when_bucket_missing(moto_server_url: str) -> None:
    store = open_object_store(
        s3_storage_url(moto_server_url, "no-such-bucket-here"), **S3_TEST_CREDENTIALS
    )
    with pytest.raises(StorageError):
        await store.check()


async def test_check_fails_fast_when_unreachable() -> None:
    store = open_object_store(
        f"s3://bucket?endpoint=http://127.0.0.1:{unused_port()}&region={S3_TEST_REGION}",
        **S3_TEST_CREDENTIALS,
    )
    started = time.monotonic()
    with pytest.raises(StorageError) as exc_info:
        await store.check()
    assert time.monotonic() - started < 5
    assert type(exc_info.value) is StorageError


async def test_unreachable_store_raises_storage_error() -> None:
    store = dead_store()
    with pytest.raises(StorageError) as exc_info:
        await store.get("a")
    assert not isinstance(exc_info.value, ObjectNotFound)
    with pytest.raises(StorageError):
        await store.head("a")
    with pytest.raises(StorageError):
        await store.put("a", b"x", content_type="text/plain")
    with pytest.raises(StorageError):
        [chunk async for chunk in store.open_stream("a")]
    with pytest.raises(StorageError):
        [info async for info in store.list_prefix("")]


async def test_delete_many_reports_failures_when_unreachable() -> None:
    store = dead_store()
    keys = [f"k/{i}" for i in range(2500)]
    assert await store.delete_many(keys) == keys


class FakeDelete:
    """Replacement for obstore.delete_async recording batches, failing on demand."""

    def __init__(self, failures: int = 0) -> None:
        self.batches: list[list[str]] = []
        self.failures = failures

    async def __call__(self, store: Any, paths: Sequence[str]) -> None:
        self.batches.append(list(paths))
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionResetError("transient")


async def test_delete_many_batches_of_1000(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeDelete()
    monkeypatch.setattr(s3_module.obstore, "delete_async", fake)
    keys = [f"k/{i}" for i in range(2345)]
    assert await dead_store().delete_many(keys + keys[:10]) == []
    assert [len(b) for b in fake.batches] == [1000, 1000, 345]
    assert [k for b in fake.batches for k in b] == keys


async def test_delete_many_reports_a_failed_batch_and_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # obstore retries transient failures itself (RetryConfig); one that still fails is the
    # batch's keys in the answer, and the next batch is tried.
    fake = FakeDelete(failures=1)
    monkeypatch.setattr(s3_module.obstore, "delete_async", fake)
    keys = [f"k/{i}" for i in range(1200)]
    assert await dead_store().delete_many(keys) == keys[:1000]
    assert [len(b) for b in fake.batches] == [1000, 200]


async def test_delete_many_stops_after_two_failed_batches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = FakeDelete(failures=2)
    monkeypatch.setattr(s3_module.obstore, "delete_async", fake)
    keys = [f"k/{i}" for i in range(3500)]
    assert await dead_store().delete_many(keys) == keys
    assert [len(b) for b in fake.batches] == [1000, 1000]


async def test_explicit_endpoint_beats_environment(
    moto_server_url: str, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{unused_port()}")
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{unused_port()}")
    store = open_object_store(s3_storage_url(moto_server_url, s3_bucket), **S3_TEST_CREDENTIALS)
    await store.check()
    await store.put("x", b"1", content_type="text/plain")
    assert await store.get("x") == b"1"


async def test_endpoint_from_environment(
    moto_server_url: str, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server_url)
    store = open_object_store(f"s3://{s3_bucket}?region={S3_TEST_REGION}", **S3_TEST_CREDENTIALS)
    await store.put("x", b"1", content_type="text/plain")
    assert await store.get("x") == b"1"


async def test_explicit_credentials_not_mixed_with_environment(
    moto_server_url: str, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "env-key")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "env-token")
    store = open_object_store(s3_storage_url(moto_server_url, s3_bucket), **S3_TEST_CREDENTIALS)
    await store.put("x", b"1", content_type="text/plain")
    url = await store.signed_get_url("x", expires_in=timedelta(minutes=1))
    assert url is not None
    assert f"Credential={S3_TEST_CREDENTIALS['access_key_id']}%2F" in url
    assert "Security-Token" not in url
