"""OpenAI Images adapter against a fake OpenAI API on 127.0.0.1."""

from __future__ import annotations

import base64
import logging

import pytest

from flowstudio.providers import (
    ContentBlocked,
    GenerationRequest,
    InputImage,
    InvalidRequest,
    ProviderFailure,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
)
from flowstudio.providers.http import HttpTimeouts
from flowstudio.providers.openai import OpenAIProvider
from tests.providers.contract.fakeserver import json_reply, raw_reply, slow

KEY = "sk-test-0123456789abcdefSECRET"
GENERATIONS = "/v1/images/generations"
EDITS = "/v1/images/edits"


def make_provider(fake, *, read: float = 5.0, api_key: str | None = KEY) -> OpenAIProvider:
    return OpenAIProvider(
        api_key=api_key,
        base_url=f"{fake.url}/v1",
        timeouts=HttpTimeouts(connect=2.0, read=read),
    )


def make_request(**overrides) -> GenerationRequest:
    values = {
        "prompt": "a red fox in fresh snow",
        "model": "gpt-image-1",
        "width": 1200,
        "height": 800,
        "seed": 7,
        "temperature": 0.4,
    }
    values.update(overrides)
    return GenerationRequest(**values)


def success_body(png_b64: str, **extra) -> dict:
    return {
        "created": 1713833628,
        "data": [{"b64_json": png_b64, "revised_prompt": "A red fox standing in fresh snow."}],
        "background": "opaque",
        "output_format": "png",
        "quality": "high",
        "size": "1536x1024",
        "usage": {"input_tokens": 50, "output_tokens": 4160, "total_tokens": 4210},
        **extra,
    }


async def test_generation_request_and_result(fake, png, png_b64, caplog):
    caplog.set_level(logging.DEBUG)
    fake.route(
        "POST",
        GENERATIONS,
        json_reply(success_body(png_b64), headers={"x-request-id": "req_gen_1"}),
    )
    async with make_provider(fake) as provider:
        result = await provider.generate(
            make_request(options={"quality": "high", "background": "opaque"})
        )

    [sent] = fake.requests
    assert (sent.method, sent.path) == ("POST", GENERATIONS)
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.content_type == "application/json"
    assert sent.query == {}
    assert sent.json() == {
        "model": "gpt-image-1",
        "prompt": "a red fox in fresh snow",
        "n": 1,
        "size": "1536x1024",  # the supported size closest to 1200x800
        "quality": "high",
        "background": "opaque",
    }
    assert result.image == png
    assert result.mime == "image/png"
    assert result.model == "gpt-image-1"
    assert result.provider_request_id == "req_gen_1"
    assert result.metadata["revised_prompt"] == "A red fox standing in fresh snow."
    assert result.metadata["size"] == "1536x1024"
    assert result.metadata["requested_size"] == "1200x800"
    assert result.metadata["usage"]["total_tokens"] == 4210
    assert result.metadata["ignored_settings"] == ["temperature", "seed"]
    assert KEY not in repr(result.metadata) and KEY not in caplog.text


@pytest.mark.parametrize(
    ("width", "height", "size"),
    [(1024, 1024, "1024x1024"), (800, 1400, "1024x1536"), (2000, 1000, "1536x1024")],
)
async def test_size_maps_to_the_closest_supported_size(fake, png_b64, width, height, size):
    fake.route("POST", GENERATIONS, json_reply(success_body(png_b64)))
    async with make_provider(fake) as provider:
        await provider.generate(make_request(width=width, height=height))
    assert fake.requests[0].json()["size"] == size


async def test_edit_sends_every_input_image_as_multipart(fake, png, png_b64, jpeg):
    fake.route(
        "POST", EDITS, json_reply(success_body(png_b64), headers={"x-request-id": "req_edit"})
    )
    inputs = (InputImage(png, "image/png", "object"), InputImage(jpeg, "image/jpeg", "scene"))
    async with make_provider(fake) as provider:
        result = await provider.generate(
            make_request(input_images=inputs, options={"input_fidelity": "high"})
        )

    [sent] = fake.requests
    assert (sent.method, sent.path) == ("POST", EDITS)
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.content_type == "multipart/form-data"
    assert sent.form == {
        "model": ["gpt-image-1"],
        "prompt": ["a red fox in fresh snow"],
        "n": ["1"],
        "size": ["1536x1024"],
        "input_fidelity": ["high"],
    }
    files = sent.files["image[]"]
    assert [f.data for f in files] == [png, jpeg]
    assert [f.content_type for f in files] == ["image/png", "image/jpeg"]
    assert [f.filename for f in files] == ["input-1.png", "input-2.jpg"]
    assert result.provider_request_id == "req_edit"
    assert result.metadata["endpoint"] == "images/edits"
    assert result.metadata["input_images"] == 2


async def test_a_single_edit_image_uses_the_image_field(fake, png, png_b64):
    fake.route("POST", EDITS, json_reply(success_body(png_b64)))
    async with make_provider(fake) as provider:
        await provider.generate(make_request(input_images=(InputImage(png, "image/png"),)))
    assert list(fake.requests[0].files) == ["image"]


async def test_any_openai_compatible_base_url(fake, png_b64):
    fake.route("POST", "/proxy/openai/v1/images/generations", json_reply(success_body(png_b64)))
    provider = OpenAIProvider(api_key=KEY, base_url=f"{fake.url}/proxy/openai/v1/")
    async with provider:
        result = await provider.generate(make_request(model="my-local-image-model"))
    # Unknown (compatible) models get the step's own size.
    assert fake.requests[0].json()["size"] == "1200x800"
    assert result.model == "my-local-image-model"


async def test_url_output_is_downloaded_without_the_key(fake, png):
    fake.route("GET", "/files/out.png", raw_reply(png, content_type="image/png"))
    body = {"created": 1, "data": [{"url": fake.url_for("/files/out.png", host="localhost")}]}
    fake.route("POST", GENERATIONS, json_reply(body))
    async with make_provider(fake) as provider:
        result = await provider.generate(make_request(model="dall-e-3"))
    assert fake.requests[0].json()["response_format"] == "b64_json"
    download = fake.requests_to("/files/out.png")[0]
    assert "authorization" not in download.headers
    assert result.image == png


def error_body(message: str, kind: str, code: str | None, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


FAILURES = [
    pytest.param(
        json_reply(
            error_body(
                "Invalid value: '999x999'.", "invalid_request_error", "invalid_value", "size"
            ),
            400,
            {"x-request-id": "req_400"},
        ),
        InvalidRequest,
        None,
        ["HTTP 400", "Invalid value: '999x999'."],
        id="400",
    ),
    pytest.param(
        json_reply(
            error_body(
                f"Incorrect API key provided: {KEY[:8]}***{KEY[-4:]}.",
                "invalid_request_error",
                "invalid_api_key",
            ),
            401,
            {"x-request-id": "req_401"},
        ),
        InvalidRequest,
        None,
        ["HTTP 401", "FLOWSTUDIO_OPENAI_API_KEY"],
        id="401",
    ),
    pytest.param(
        json_reply(
            error_body(
                "Rate limit reached for images per minute.", "requests", "rate_limit_exceeded"
            ),
            429,
            {"x-request-id": "req_429", "retry-after": "7"},
        ),
        RateLimited,
        7.0,
        ["HTTP 429", "Rate limit reached", "Retry after 7 s"],
        id="429-retry-after",
    ),
    pytest.param(
        json_reply(
            error_body(
                "You exceeded your current quota.", "insufficient_quota", "insufficient_quota"
            ),
            429,
            {"x-request-id": "req_quota"},
        ),
        InvalidRequest,
        None,
        ["no quota left", "billing"],
        id="429-insufficient-quota",
    ),
    pytest.param(
        json_reply(
            error_body(
                "The server had an error while processing your request.", "server_error", None
            ),
            500,
            {"x-request-id": "req_500"},
        ),
        ProviderUnavailable,
        None,
        ["HTTP 500", "try again later"],
        id="500",
    ),
    pytest.param(
        raw_reply("<html>502 Bad Gateway</html>", 502, "text/html", {"x-request-id": "req_502"}),
        ProviderUnavailable,
        None,
        ["HTTP 502", "Bad Gateway"],
        id="502-html",
    ),
    pytest.param(
        raw_reply(
            '{"created": 1, "data": [{"b64_json": ', 200, headers={"x-request-id": "req_bad"}
        ),
        ProviderFailure,
        None,
        ["not JSON"],
        id="malformed-json",
    ),
    pytest.param(
        json_reply(
            error_body(
                "Your request was rejected by the safety system. safety_violations=[violence].",
                "image_generation_user_error",
                "moderation_blocked",
            ),
            400,
            {"x-request-id": "req_blocked"},
        ),
        ContentBlocked,
        None,
        ["content policy", "safety system"],
        id="content-policy",
    ),
]


@pytest.mark.parametrize(("reply", "error_class", "retry_after", "fragments"), FAILURES)
async def test_failures_are_normalised(fake, reply, error_class, retry_after, fragments, caplog):
    caplog.set_level(logging.DEBUG)
    fake.route("POST", GENERATIONS, reply)
    async with make_provider(fake) as provider:
        with pytest.raises(error_class) as info:
            await provider.generate(make_request())
    error = info.value
    assert type(error) is error_class
    assert error.retry_after == retry_after
    assert error.provider_request_id == reply.headers["x-request-id"]
    for fragment in fragments:
        assert fragment in error.message
    assert KEY not in error.message and KEY[-4:] not in error.message
    assert KEY not in caplog.text


async def test_slow_response_is_a_provider_timeout(fake, png_b64):
    fake.route("POST", GENERATIONS, slow(fake, 2.0, json_reply(success_body(png_b64))))
    async with make_provider(fake, read=0.3) as provider:
        with pytest.raises(ProviderTimeout) as info:
            await provider.generate(make_request())
    assert info.value.retryable
    assert "did not answer within 0.3 s" in info.value.message


async def test_unreachable_server_is_unavailable():
    provider = OpenAIProvider(
        api_key=KEY, base_url="http://127.0.0.1:9/v1", timeouts=HttpTimeouts(connect=1, read=1)
    )
    async with provider:
        with pytest.raises(ProviderUnavailable) as info:
            await provider.generate(make_request())
    assert "could not be reached at 127.0.0.1" in info.value.message


async def test_unconfigured_provider_fails_with_the_setting_to_set(fake):
    provider = make_provider(fake, api_key=None)
    assert not provider.is_configured()
    assert provider.missing_settings() == ("FLOWSTUDIO_OPENAI_API_KEY",)
    with pytest.raises(InvalidRequest) as info:
        await provider.generate(make_request())
    assert "set FLOWSTUDIO_OPENAI_API_KEY" in info.value.message
    assert fake.requests == []


async def test_unknown_option_is_refused_before_any_request(fake):
    async with make_provider(fake) as provider:
        with pytest.raises(InvalidRequest) as info:
            await provider.generate(make_request(options={"qualty": "high"}))
    assert "'qualty'" in info.value.message and "quality" in info.value.message
    assert fake.requests == []


async def test_extra_fields_are_passed_through(fake, png_b64):
    fake.route("POST", GENERATIONS, json_reply(success_body(png_b64)))
    async with make_provider(fake) as provider:
        await provider.generate(make_request(options={"extra": {"partial_images": 0}}))
    assert fake.requests[0].json()["partial_images"] == 0


async def test_invalid_base64_is_a_provider_error(fake):
    body = {"created": 1, "data": [{"b64_json": "%%%not-base64%%%"}]}
    fake.route("POST", GENERATIONS, json_reply(body, headers={"x-request-id": "r"}))
    async with make_provider(fake) as provider:
        with pytest.raises(ProviderFailure):
            await provider.generate(make_request())


async def test_connections_are_reused(fake, png_b64):
    fake.route("POST", GENERATIONS, json_reply(success_body(png_b64)))
    async with make_provider(fake) as provider:
        await provider.generate(make_request())
        client = provider.http._client
        await provider.generate(make_request())
        assert provider.http._client is client
    assert provider.http._client is None
    assert len(fake.requests) == 2


def test_base64_fixture_roundtrip(png, png_b64):
    assert base64.b64decode(png_b64) == png
