"""The shared HTTP plumbing of the real providers: Retry-After, status mapping, limits, secrets."""

from __future__ import annotations

import email.utils

import pytest

from flowstudio.providers import (
    InvalidRequest,
    ProviderFailure,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
)
from flowstudio.providers.http import (
    HttpTimeouts,
    ProviderHttpClient,
    closest_aspect_ratio,
    closest_size,
    decode_base64_image,
    error_for_status,
    parse_duration,
    parse_retry_after,
    sniff_image_mime,
)
from tests.providers.contract.fakeserver import raw_reply

NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "7"}, 7.0),
        ({"retry-after": "2.5"}, 2.5),
        ({"Retry-After": email.utils.formatdate(NOW + 42, usegmt=True)}, 42.0),
        ({"Retry-After": email.utils.formatdate(NOW - 10, usegmt=True)}, 0.0),
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),
        ({"Retry-After": "soon"}, None),
        ({"Retry-After": "-3"}, None),
        ({}, None),
    ],
)
def test_parse_retry_after(headers, expected):
    assert parse_retry_after(headers, now=NOW) == expected


def test_parse_duration():
    assert parse_duration("37s") == 37.0
    assert parse_duration("0.5s") == 0.5
    assert parse_duration("1m") is None and parse_duration(None) is None


@pytest.mark.parametrize(
    ("status", "error_class", "retryable"),
    [
        (400, InvalidRequest, False),
        (401, InvalidRequest, False),
        (403, InvalidRequest, False),
        (404, InvalidRequest, False),
        (408, ProviderTimeout, True),
        (409, InvalidRequest, False),
        (413, InvalidRequest, False),
        (422, InvalidRequest, False),
        (429, RateLimited, True),
        (500, ProviderUnavailable, True),
        (502, ProviderUnavailable, True),
        (503, ProviderUnavailable, True),
        (504, ProviderTimeout, True),
        (529, ProviderUnavailable, True),
        (302, ProviderFailure, False),
    ],
)
def test_status_mapping(status, error_class, retryable):
    error = error_for_status(
        label="Acme",
        status=status,
        detail="the details",
        retry_after=3.0,
        request_id="req-1",
        key_setting="FLOWSTUDIO_ACME_KEY",
    )
    assert type(error) is error_class
    assert error.retryable is retryable
    assert error.retry_after == 3.0
    assert error.provider_request_id == "req-1"
    assert f"HTTP {status}" in error.message


def test_401_never_quotes_the_provider():
    error = error_for_status(
        label="Acme",
        status=401,
        detail="Incorrect API key provided: sk-abc***xyz",
        retry_after=None,
        request_id=None,
        key_setting="FLOWSTUDIO_ACME_KEY",
    )
    assert "sk-abc" not in error.message
    assert "check FLOWSTUDIO_ACME_KEY" in error.message


def test_long_details_are_shortened():
    error = error_for_status(
        label="Acme",
        status=400,
        detail="x" * 5000,
        retry_after=None,
        request_id=None,
        key_setting="K",
    )
    assert len(error.message) < 600


def test_sizes_and_ratios():
    sizes = ((1024, 1024), (1536, 1024), (1024, 1536))
    assert closest_size(1024, 1024, sizes) == (1024, 1024)
    assert closest_size(1920, 1080, sizes) == (1536, 1024)
    assert closest_size(600, 1000, sizes) == (1024, 1536)
    ratios = ("1:1", "16:9", "9:16", "4:3", "3:4", "21:9")
    assert closest_aspect_ratio(1920, 1080, ratios) == "16:9"
    assert closest_aspect_ratio(1024, 1024, ratios) == "1:1"
    assert closest_aspect_ratio(2560, 1080, ratios) == "21:9"
    assert closest_aspect_ratio(768, 1024, ratios) == "3:4"


def test_image_helpers(png, jpeg, webp, png_b64):
    assert sniff_image_mime(png) == "image/png"
    assert sniff_image_mime(jpeg) == "image/jpeg"
    assert sniff_image_mime(webp) == "image/webp"
    assert sniff_image_mime(b"<html>") is None
    assert decode_base64_image(png_b64, "Acme", None) == png
    assert decode_base64_image("data:image/png;base64," + png_b64, "Acme", None) == png
    with pytest.raises(ProviderFailure):
        decode_base64_image("not base64!", "Acme", "r")
    with pytest.raises(ProviderFailure):
        decode_base64_image(None, "Acme", "r")


def test_timeouts_must_be_positive():
    with pytest.raises(ValueError):
        HttpTimeouts(connect=0)
    timeout = HttpTimeouts(connect=1.5, read=9).as_httpx()
    assert (timeout.connect, timeout.read, timeout.pool) == (1.5, 9, 1.5)


async def test_oversized_responses_are_refused(fake):
    fake.route("GET", "/big", raw_reply(b"x" * 5000, content_type="application/octet-stream"))
    client = ProviderHttpClient(label="Acme", timeouts=HttpTimeouts(2, 2), max_response_bytes=1000)
    try:
        with pytest.raises(ProviderFailure) as info:
            await client.send("GET", f"{fake.url}/big")
    finally:
        await client.aclose()
    assert "FlowStudio accepts" in info.value.message


async def test_secrets_are_redacted_from_transport_errors():
    secret = "sk-SECRET-in-a-bad-url"
    client = ProviderHttpClient(label="Acme", timeouts=HttpTimeouts(1, 1), secrets=[secret])
    try:
        with pytest.raises(InvalidRequest) as info:
            await client.send("GET", f"ftp://example.invalid/{secret}")
    finally:
        await client.aclose()
    assert secret not in info.value.message


async def test_auth_headers_go_only_where_they_are_given(fake):
    fake.route("GET", "/a", raw_reply(b"{}"))
    client = ProviderHttpClient(label="Acme", timeouts=HttpTimeouts(2, 2))
    try:
        await client.send("GET", f"{fake.url}/a", auth_headers={"Authorization": "Bearer t"})
        await client.send("GET", f"{fake.url}/a")
    finally:
        await client.aclose()
    first, second = fake.requests
    assert first.headers["authorization"] == "Bearer t"
    assert "authorization" not in second.headers
    assert first.headers["user-agent"].startswith("FlowStudio/")
