from __future__ import annotations

from pathlib import Path

import pytest

from flowstudio.storage import LocalObjectStore, S3ObjectStore, open_object_store


def test_file_url_absolute(tmp_path: Path) -> None:
    store = open_object_store(f"file://{tmp_path}/objects")
    assert isinstance(store, LocalObjectStore)
    assert store.scheme == "file"
    assert store.root == tmp_path / "objects"
    assert store.root.is_dir()


def test_file_url_relative_to_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = open_object_store("file://data/objects")
    assert isinstance(store, LocalObjectStore)
    assert store.root == tmp_path / "data" / "objects"
    assert store.root.is_dir()


def test_s3_url_full() -> None:
    store = open_object_store(
        "s3://my-bucket?endpoint=http://127.0.0.1:9000&region=auto&prefix=some/prefix",
        access_key_id="AK",
        secret_access_key="SK",
    )
    assert isinstance(store, S3ObjectStore)
    assert store.scheme == "s3"
    assert store.bucket == "my-bucket"
    assert store.endpoint == "http://127.0.0.1:9000"
    assert store.region == "auto"
    assert store.prefix == "some/prefix"
    assert "SK" not in repr(store)


def test_s3_url_minimal_and_path_prefix() -> None:
    store = open_object_store("s3://bucket.name/a/b/")
    assert isinstance(store, S3ObjectStore)
    assert store.bucket == "bucket.name"
    assert store.prefix == "a/b"
    assert store.endpoint is None
    assert store.region is None


def test_s3_region_argument_wins() -> None:
    store = open_object_store("s3://b?region=auto", region="eu-west-1")
    assert isinstance(store, S3ObjectStore)
    assert store.region == "eu-west-1"


@pytest.mark.parametrize(
    "url",
    [
        "ftp://host/dir",
        "http://example.com/bucket",
        "gs://bucket",
        "/just/a/path",
        "",
        "   ",
        "s3:bucket",
        "s3://",
        "s3://?endpoint=http://x",
        "s3://bad bucket",
        "s3://user:pw@bucket",
        "s3://bucket?unknown=1",
        "s3://bucket?region=a&region=b",
        "s3://bucket?endpoint=ftp://host",
        "s3://bucket/p?prefix=q",
        "s3://bucket?prefix=../x",
        "file://",
        "file:///",
        "file:///var/lib/flowstudio?y=1",
    ],
)
def test_bad_urls(url: str) -> None:
    with pytest.raises(ValueError):
        open_object_store(url)


def test_unknown_scheme_message() -> None:
    with pytest.raises(ValueError, match="unsupported storage URL scheme 'ftp'"):
        open_object_store("ftp://host/dir")


def test_credentials_must_be_paired() -> None:
    with pytest.raises(ValueError, match="together"):
        open_object_store("s3://bucket", access_key_id="AK")
