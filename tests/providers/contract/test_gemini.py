"""Gemini image adapter against a fake Gemini API (generateContent) on 127.0.0.1."""

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
from flowstudio.providers.gemini import GeminiProvider
from flowstudio.providers.http import HttpTimeouts
from tests.providers.contract.fakeserver import json_reply, raw_reply, slow

KEY = "AIzaSyTEST-gemini-SECRET-0123456789"
MODEL = "gemini-2.5-flash-image"
PATH = f"/v1beta/models/{MODEL}:generateContent"


def make_provider(fake, *, read: float = 5.0, api_key: str | None = KEY) -> GeminiProvider:
    return GeminiProvider(
        api_key=api_key, base_url=f"{fake.url}/v1beta", timeouts=HttpTimeouts(connect=2, read=read)
    )


def make_request(**overrides) -> GenerationRequest:
    values = {
        "prompt": "a lighthouse at dusk, watercolour",
        "model": MODEL,
        "width": 1920,
        "height": 1080,
        "seed": 42,
        "temperature": 0.4,
    }
    values.update(overrides)
    return GenerationRequest(**values)


def success_body(image_b64: str, *, text: str = "Here is your lighthouse.") -> dict:
    return {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [
                        {"text": text},
                        {"inlineData": {"mimeType": "image/png", "data": image_b64}},
                    ],
                },
                "finishReason": "STOP",
                "index": 0,
            }
        ],
        "usageMetadata": {
            "promptTokenCount": 12,
            "candidatesTokenCount": 1290,
            "totalTokenCount": 1302,
        },
        "modelVersion": "gemini-2.5-flash-image-001",
        "responseId": "resp-gemini-1",
    }


async def test_request_shape_and_result(fake, png, png_b64, jpeg, caplog):
    caplog.set_level(logging.DEBUG)
    fake.route("POST", PATH, json_reply(success_body(png_b64)))
    inputs = (InputImage(png, "image/png", "object"), InputImage(jpeg, "", "scene"))
    async with make_provider(fake) as provider:
        result = await provider.generate(make_request(input_images=inputs))

    [sent] = fake.requests
    assert (sent.method, sent.path, sent.query) == ("POST", PATH, {})  # no key in the URL
    assert sent.headers["x-goog-api-key"] == KEY
    assert "authorization" not in sent.headers
    assert sent.content_type == "application/json"
    body = sent.json()
    assert body["contents"] == [
        {
            "role": "user",
            "parts": [
                {"text": "a lighthouse at dusk, watercolour"},
                {"inlineData": {"mimeType": "image/png", "data": png_b64}},
                {
                    "inlineData": {
                        "mimeType": "image/jpeg",  # sniffed: the declared type was empty
                        "data": base64.b64encode(jpeg).decode(),
                    }
                },
            ],
        }
    ]
    assert body["generationConfig"] == {
        "responseModalities": ["TEXT", "IMAGE"],
        "temperature": 0.4,
        "seed": 42,
        "imageConfig": {"aspectRatio": "16:9"},
    }
    assert result.image == png and result.mime == "image/png"
    assert result.model == MODEL
    assert result.provider_request_id == "resp-gemini-1"
    assert result.metadata["model_version"] == "gemini-2.5-flash-image-001"
    assert result.metadata["text"] == "Here is your lighthouse."
    assert result.metadata["temperature"] == 0.4
    assert result.metadata["aspect_ratio"] == "16:9"
    assert result.metadata["usage"]["totalTokenCount"] == 1302
    assert KEY not in caplog.text and KEY not in repr(result.metadata)


async def test_options_and_large_seeds(fake, png_b64):
    fake.route(
        "POST",
        "/v1beta/models/gemini-3-pro-image-preview:generateContent",
        json_reply(success_body(png_b64)),
    )
    options = {
        "aspect_ratio": "21:9",
        "image_size": "2K",
        "safety_settings": [
            {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "threshold": "BLOCK_ONLY_HIGH"}
        ],
        "system_instruction": "Always paint in watercolour.",
        "extra": {"candidateCount": 1},
    }
    async with make_provider(fake) as provider:
        result = await provider.generate(
            make_request(model="gemini-3-pro-image-preview", seed=2**40 + 5, options=options)
        )
    body = fake.requests[0].json()
    assert body["generationConfig"]["imageConfig"] == {"aspectRatio": "21:9", "imageSize": "2K"}
    assert body["generationConfig"]["seed"] == (2**40 + 5) % 2**31  # int32 on the wire
    assert body["generationConfig"]["candidateCount"] == 1
    assert body["safetySettings"] == options["safety_settings"]
    assert body["systemInstruction"] == {"parts": [{"text": "Always paint in watercolour."}]}
    assert result.metadata["seed"] == (2**40 + 5) % 2**31


async def test_thought_images_are_skipped(fake, png, png_b64, jpeg):
    body = success_body(png_b64)
    draft = {"inlineData": {"mimeType": "image/jpeg", "data": base64.b64encode(jpeg).decode()}}
    body["candidates"][0]["content"]["parts"].insert(0, {**draft, "thought": True})
    fake.route("POST", PATH, json_reply(body))
    async with make_provider(fake) as provider:
        result = await provider.generate(make_request())
    assert result.image == png


def api_error(code: int, status: str, message: str, details: list | None = None) -> dict:
    return {"error": {"code": code, "message": message, "status": status, "details": details or []}}


RETRY_INFO = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "17s"}
KEY_INVALID = {
    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
    "reason": "API_KEY_INVALID",
    "domain": "googleapis.com",
}

FAILURES = [
    pytest.param(
        json_reply(api_error(400, "INVALID_ARGUMENT", "Unsupported aspect ratio: 7:3"), 400),
        InvalidRequest,
        None,
        ["HTTP 400", "INVALID_ARGUMENT", "Unsupported aspect ratio"],
        id="400",
    ),
    pytest.param(
        json_reply(
            api_error(
                400,
                "INVALID_ARGUMENT",
                "API key not valid. Please pass a valid API key.",
                [KEY_INVALID],
            ),
            400,
        ),
        InvalidRequest,
        None,
        ["API_KEY_INVALID", "FLOWSTUDIO_GEMINI_API_KEY"],
        id="400-api-key-invalid",
    ),
    pytest.param(
        json_reply(api_error(401, "UNAUTHENTICATED", "Request had invalid credentials."), 401),
        InvalidRequest,
        None,
        ["FLOWSTUDIO_GEMINI_API_KEY"],
        id="401",
    ),
    pytest.param(
        json_reply(
            api_error(429, "RESOURCE_EXHAUSTED", "Quota exceeded for metric generate_content."),
            429,
            {"retry-after": "12"},
        ),
        RateLimited,
        12.0,
        ["HTTP 429", "RESOURCE_EXHAUSTED", "Quota exceeded"],
        id="429-retry-after-header",
    ),
    pytest.param(
        json_reply(api_error(429, "RESOURCE_EXHAUSTED", "Quota exceeded.", [RETRY_INFO]), 429),
        RateLimited,
        17.0,
        ["Retry after 17 s"],
        id="429-retry-info",
    ),
    pytest.param(
        json_reply(api_error(500, "INTERNAL", "An internal error has occurred."), 500),
        ProviderUnavailable,
        None,
        ["HTTP 500", "INTERNAL"],
        id="500",
    ),
    pytest.param(
        json_reply(api_error(503, "UNAVAILABLE", "The model is overloaded."), 503),
        ProviderUnavailable,
        None,
        ["overloaded"],
        id="503",
    ),
    pytest.param(
        raw_reply('{"candidates": [{"content": ', 200),
        ProviderFailure,
        None,
        ["not JSON"],
        id="malformed-json",
    ),
    pytest.param(
        json_reply(
            {
                "promptFeedback": {"blockReason": "SAFETY", "safetyRatings": []},
                "modelVersion": MODEL,
                "responseId": "resp-blocked",
            }
        ),
        ContentBlocked,
        None,
        ["content policy", "prompt was blocked (SAFETY)"],
        id="content-policy-prompt",
    ),
    pytest.param(
        json_reply(
            {
                "candidates": [
                    {"content": {"role": "model", "parts": []}, "finishReason": "IMAGE_SAFETY"}
                ],
                "responseId": "resp-image-safety",
            }
        ),
        ContentBlocked,
        None,
        ["IMAGE_SAFETY"],
        id="content-policy-image",
    ),
    pytest.param(
        json_reply(
            {
                "candidates": [
                    {
                        "content": {
                            "role": "model",
                            "parts": [{"text": "I can only describe it."}],
                        },
                        "finishReason": "STOP",
                    }
                ],
                "responseId": "resp-text-only",
            }
        ),
        ProviderFailure,
        None,
        ["no image", "I can only describe it."],
        id="text-only",
    ),
]


@pytest.mark.parametrize(("reply", "error_class", "retry_after", "fragments"), FAILURES)
async def test_failures_are_normalised(fake, reply, error_class, retry_after, fragments):
    fake.route("POST", PATH, reply)
    async with make_provider(fake) as provider:
        with pytest.raises(error_class) as info:
            await provider.generate(make_request())
    error = info.value
    assert type(error) is error_class
    assert error.retry_after == retry_after
    for fragment in fragments:
        assert fragment in error.message
    assert KEY not in error.message


async def test_blocked_response_keeps_the_response_id(fake):
    fake.route(
        "POST", PATH, json_reply({"promptFeedback": {"blockReason": "OTHER"}, "responseId": "r-9"})
    )
    async with make_provider(fake) as provider:
        with pytest.raises(ContentBlocked) as info:
            await provider.generate(make_request())
    assert info.value.provider_request_id == "r-9"
    assert not info.value.retryable


async def test_slow_response_is_a_provider_timeout(fake, png_b64):
    fake.route("POST", PATH, slow(fake, 2.0, json_reply(success_body(png_b64))))
    async with make_provider(fake, read=0.3) as provider:
        with pytest.raises(ProviderTimeout):
            await provider.generate(make_request())


async def test_unconfigured_provider_names_its_setting(fake):
    provider = make_provider(fake, api_key=None)
    with pytest.raises(InvalidRequest) as info:
        await provider.generate(make_request())
    assert "FLOWSTUDIO_GEMINI_API_KEY" in info.value.message
    assert fake.requests == []


async def test_model_ids_cannot_escape_the_path(fake):
    async with make_provider(fake) as provider:
        with pytest.raises(InvalidRequest):
            await provider.generate(make_request(model="../../files?x=1"))
    assert fake.requests == []
