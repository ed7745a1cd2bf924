from __future__ import annotations

import uuid

import pytest

from flowstudio.storage import (
    InvalidObjectKey,
    generation_object_key,
    run_prefix,
    thumbnail_key,
    upload_object_key,
    user_prefix,
    validate_key,
    validate_prefix,
)

USER = uuid.UUID("12345678-1234-5678-1234-567812345678")
RUN = uuid.UUID("ABCDEFAB-CDEF-ABCD-EFAB-CDEFABCDEFAB")
GEN = uuid.UUID("00000000-0000-4000-8000-000000000001")
SHA = "a" * 64

BAD_KEYS = [
    "",
    "/etc/passwd",
    "../x",
    "a/../../b",
    "a/./b",
    ".",
    "..",
    "a\\b",
    "a//b",
    "a/",
    "a\x00b",
    "a\nb",
    "a\tb",
    "a b",
    "a%2Fb",
    "ü",
    "x" * 1025,
]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_validate_key_refuses(key: str) -> None:
    with pytest.raises(InvalidObjectKey):
        validate_key(key)


def test_invalid_object_key_is_value_error() -> None:
    assert issubclass(InvalidObjectKey, ValueError)


@pytest.mark.parametrize(
    "key", ["a", "a/b", "u/1/r/2/step_1/x.png", "A-Z_0.9/...x", ".hidden", "x" * 1024]
)
def test_validate_key_accepts(key: str) -> None:
    assert validate_key(key) == key


def test_validate_key_refuses_non_string() -> None:
    with pytest.raises(InvalidObjectKey):
        validate_key(b"abc")  # type: ignore[arg-type]


@pytest.mark.parametrize("prefix", ["", "u/", "u/1", "u/1/r/"])
def test_validate_prefix_accepts(prefix: str) -> None:
    assert validate_prefix(prefix) == prefix


@pytest.mark.parametrize("prefix", ["/", "u//", "../", "/u/", "a/../", "u\\"])
def test_validate_prefix_refuses(prefix: str) -> None:
    with pytest.raises(InvalidObjectKey):
        validate_prefix(prefix)


def test_prefix_builders() -> None:
    assert user_prefix(USER) == "u/12345678-1234-5678-1234-567812345678/"
    assert (
        run_prefix(USER, RUN)
        == "u/12345678-1234-5678-1234-567812345678/r/abcdefab-cdef-abcd-efab-cdefabcdefab/"
    )


def test_generation_object_key_format() -> None:
    key = generation_object_key(
        user_id=USER, run_id=RUN, step_id="upscale-2", generation_id=GEN, ext="png"
    )
    assert key == (
        "u/12345678-1234-5678-1234-567812345678/r/abcdefab-cdef-abcd-efab-cdefabcdefab/"
        "upscale-2/00000000-0000-4000-8000-000000000001.png"
    )
    assert key.startswith(run_prefix(USER, RUN))
    assert validate_key(key) == key


def test_uuid_strings_are_canonicalised() -> None:
    key = generation_object_key(
        user_id=str(USER).upper(),  # type: ignore[arg-type]
        run_id=RUN.hex,  # type: ignore[arg-type]
        step_id="s",
        generation_id=GEN,
        ext="webp",
    )
    assert key.startswith(run_prefix(USER, RUN))


def test_upload_object_key_format() -> None:
    key = upload_object_key(user_id=USER, run_id=RUN, step_id="input", sha256_hex=SHA, ext="jpg")
    assert key == f"{run_prefix(USER, RUN)}input/upload-{SHA}.jpg"


def test_thumbnail_key() -> None:
    key = generation_object_key(user_id=USER, run_id=RUN, step_id="s", generation_id=GEN, ext="png")
    assert thumbnail_key(key) == key + ".thumb.webp"
    with pytest.raises(InvalidObjectKey):
        thumbnail_key("../x.png")


@pytest.mark.parametrize("step_id", ["", "-a", "_a", "A", "a/b", "a.b", "a b", "..", "a" * 65, "é"])
def test_bad_step_id(step_id: str) -> None:
    with pytest.raises(InvalidObjectKey):
        generation_object_key(
            user_id=USER, run_id=RUN, step_id=step_id, generation_id=GEN, ext="png"
        )
    with pytest.raises(InvalidObjectKey):
        upload_object_key(user_id=USER, run_id=RUN, step_id=step_id, sha256_hex=SHA, ext="png")


@pytest.mark.parametrize("step_id", ["a", "0", "a_b-c", "a" * 64])
def test_good_step_id(step_id: str) -> None:
    key = generation_object_key(
        user_id=USER, run_id=RUN, step_id=step_id, generation_id=GEN, ext="png"
    )
    assert f"/{step_id}/" in key


@pytest.mark.parametrize("ext", ["", ".png", "PNG", "p/ng", "png\x00", "a" * 11])
def test_bad_ext(ext: str) -> None:
    with pytest.raises(InvalidObjectKey):
        generation_object_key(user_id=USER, run_id=RUN, step_id="s", generation_id=GEN, ext=ext)


@pytest.mark.parametrize("sha", ["", "A" * 64, "a" * 63, "g" * 64, "../" + "a" * 61])
def test_bad_sha256(sha: str) -> None:
    with pytest.raises(InvalidObjectKey):
        upload_object_key(user_id=USER, run_id=RUN, step_id="s", sha256_hex=sha, ext="png")


@pytest.mark.parametrize("bad", ["not-a-uuid", "../..", 42])
def test_bad_uuid(bad: object) -> None:
    with pytest.raises(InvalidObjectKey):
        user_prefix(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidObjectKey):
        run_prefix(USER, bad)  # type: ignore[arg-type]
