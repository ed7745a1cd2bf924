"""Cloudflare Workers AI adapter against a fake Cloudflare API on 127.0.0.1."""

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
from flowstudio.providers.cloudflare import CloudflareProvider
from flowstudio.providers.http import HttpTimeouts
from tests.providers.contract.fakeserver import json_reply, raw_reply, slow

TOKEN = "cf-token-SECRET-0123456789abcdef"
ACCOUNT = "0123456789abcdef0123456789abcdef"
FLUX = "@cf/black-forest-labs/flux-1-schnell"
SDXL = "@cf/stabilityai/stable-diffusion-xl-base-1.0"
FLUX_PATH = f"/client/v4/accounts/{ACCOUNT}/ai/run/{FLUX}"
SDXL_PATH = f"/client/v4/accounts/{ACCOUNT}/ai/run/{SDXL}"


def make_provider(
    fake, *, read: float = 5.0, token: str | None = TOKEN, account: str | None = ACCOUNT
) -> CloudflareProvider:
    return CloudflareProvider(
        account_id=account,
        api_token=token,
        base_url=f"{fake.url}/client/v4",
        timeouts=HttpTimeouts(connect=2, read=read),
    )


def make_request(**overrides) -> GenerationRequest:
    values = {
        "prompt": "a cyberpunk lizard",
        "model": FLUX,
        "width": 1024,
        "height": 768,
        "seed": 1234,
        "temperature": 0.7,
    }
    values.update(overrides)
    return GenerationRequest(**values)


def envelope(result=None, *, success: bool = True, errors: list | None = None) -> dict:
    return {"result": result, "success": success, "errors": errors or [], "messages": []}


async def test_flux_schnell_request_and_json_result(fake, jpeg, caplog):
    caplog.set_level(logging.DEBUG)
    image_b64 = base64.b64encode(jpeg).decode()
    fake.route(
        "POST",
        FLUX_PATH,
        json_reply(envelope({"image": image_b64}), headers={"cf-ray": "8f1e2d3c4b5a6978-AMS"}),
    )
    async with make_provider(fake) as provider:
        result = await provider.generate(make_request(options={"input": {"steps": 8}}))

    [sent] = fake.requests
    assert (sent.method, sent.path) == ("POST", FLUX_PATH)
    assert sent.headers["authorization"] == f"Bearer {TOKEN}"
    assert sent.content_type == "application/json"
    # FLUX schnell takes no size; temperature does not apply to diffusion models.
    assert sent.json() == {"prompt": "a cyberpunk lizard", "seed": 1234, "steps": 8}
    assert result.image == jpeg and result.mime == "image/jpeg"
    assert result.provider_request_id == "8f1e2d3c4b5a6978-AMS"
    assert result.model == FLUX
    assert result.metadata["seed"] == 1234
    assert result.metadata["input_overrides"] == ["steps"]
    assert result.metadata["ignored_settings"] == ["temperature"]
    assert TOKEN not in caplog.text


async def test_sdxl_binary_image_answer_with_size_and_input_image(fake, png):
    fake.route(
        "POST", SDXL_PATH, raw_reply(png, content_type="image/png", headers={"cf-ray": "ray-2"})
    )
    async with make_provider(fake) as provider:
        result = await provider.generate(
            make_request(
                model=SDXL,
                input_images=(InputImage(png, "image/png"),),
                options={"input": {"strength": 0.6, "guidance": 7.5}},
            )
        )
    body = fake.requests[0].json()
    assert body["width"] == 1024 and body["height"] == 768
    assert base64.b64decode(body["image_b64"]) == png
    assert body["strength"] == 0.6 and body["guidance"] == 7.5
    assert result.image == png and result.mime == "image/png"
    assert result.provider_request_id == "ray-2"


async def test_text_only_model_refuses_edit_steps_before_calling(fake, png):
    async with make_provider(fake) as provider:
        with pytest.raises(InvalidRequest) as info:
            await provider.generate(make_request(input_images=(InputImage(png, "image/png"),)))
    assert "cannot edit images" in info.value.message
    assert fake.requests == []


async def test_two_input_images_are_refused(fake, png):
    async with make_provider(fake) as provider:
        with pytest.raises(InvalidRequest) as info:
            await provider.generate(
                make_request(model=SDXL, input_images=(InputImage(png, "image/png"),) * 2)
            )
    assert "one input image" in info.value.message


FAILURES = [
    pytest.param(
        json_reply(
            envelope(
                success=False,
                errors=[
                    {"code": 5006, "message": "Error: required properties at '/' are 'prompt'"}
                ],
            ),
            400,
            {"cf-ray": "ray-400"},
        ),
        InvalidRequest,
        None,
        ["HTTP 400", "error 5006", "required properties"],
        id="400",
    ),
    pytest.param(
        json_reply(
            envelope(success=False, errors=[{"code": 10000, "message": "Authentication error"}]),
            401,
            {"cf-ray": "ray-401"},
        ),
        InvalidRequest,
        None,
        ["FLOWSTUDIO_CLOUDFLARE_API_TOKEN", "FLOWSTUDIO_CLOUDFLARE_ACCOUNT_ID"],
        id="401",
    ),
    pytest.param(
        json_reply(
            envelope(
                success=False,
                errors=[
                    {
                        "code": 3036,
                        "message": "You have used up your daily free allocation of 10,000 neurons.",
                    }
                ],
            ),
            429,
            {"cf-ray": "ray-429", "retry-after": "30"},
        ),
        RateLimited,
        30.0,
        ["error 3036", "daily free allocation"],
        id="429-retry-after",
    ),
    pytest.param(
        json_reply(
            envelope(
                success=False,
                errors=[
                    {"code": 3040, "message": "No more data centers to forward the request to"}
                ],
            ),
            429,
            {"cf-ray": "ray-3040"},
        ),
        RateLimited,
        None,
        ["error 3040"],
        id="429-out-of-capacity",
    ),
    pytest.param(
        json_reply(
            envelope(success=False, errors=[{"code": 7000, "message": "Internal server error"}]),
            500,
            {"cf-ray": "ray-500"},
        ),
        ProviderUnavailable,
        None,
        ["HTTP 500", "Internal server error"],
        id="500",
    ),
    pytest.param(
        json_reply(
            envelope(success=False, errors=[{"code": 3007, "message": "Request timeout"}]),
            408,
            {"cf-ray": "ray-408"},
        ),
        ProviderTimeout,
        None,
        ["error 3007"],
        id="408-timeout",
    ),
    pytest.param(
        raw_reply('{"result": {"image": "', 200, headers={"cf-ray": "ray-bad"}),
        ProviderFailure,
        None,
        ["neither JSON nor an image"],
        id="malformed-json",
    ),
    pytest.param(
        json_reply(
            envelope(
                success=False,
                errors=[{"code": 3030, "message": "Input prompt contains NSFW content."}],
            ),
            400,
            {"cf-ray": "ray-nsfw"},
        ),
        ContentBlocked,
        None,
        ["content policy", "NSFW"],
        id="content-policy",
    ),
    pytest.param(
        json_reply(
            envelope(success=False, errors=[{"code": 7001, "message": "upstream failure"}]),
            200,
            {"cf-ray": "ray-200"},
        ),
        ProviderUnavailable,
        None,
        ["upstream failure"],
        id="200-success-false",
    ),
]


@pytest.mark.parametrize(("reply", "error_class", "retry_after", "fragments"), FAILURES)
async def test_failures_are_normalised(fake, reply, error_class, retry_after, fragments):
    fake.route("POST", FLUX_PATH, reply)
    async with make_provider(fake) as provider:
        with pytest.raises(error_class) as info:
            await provider.generate(make_request())
    error = info.value
    assert type(error) is error_class
    assert error.retry_after == retry_after
    assert error.provider_request_id == reply.headers["cf-ray"]
    for fragment in fragments:
        assert fragment in error.message
    assert TOKEN not in error.message


async def test_slow_response_is_a_provider_timeout(fake, jpeg):
    body = envelope({"image": base64.b64encode(jpeg).decode()})
    fake.route("POST", FLUX_PATH, slow(fake, 2.0, json_reply(body)))
    async with make_provider(fake, read=0.3) as provider:
        with pytest.raises(ProviderTimeout):
            await provider.generate(make_request())


@pytest.mark.parametrize(
    ("token", "account", "missing"),
    [
        (None, ACCOUNT, ["FLOWSTUDIO_CLOUDFLARE_API_TOKEN"]),
        (TOKEN, None, ["FLOWSTUDIO_CLOUDFLARE_ACCOUNT_ID"]),
        (None, None, ["FLOWSTUDIO_CLOUDFLARE_ACCOUNT_ID", "FLOWSTUDIO_CLOUDFLARE_API_TOKEN"]),
    ],
)
async def test_unconfigured_provider_names_its_settings(fake, token, account, missing):
    provider = make_provider(fake, token=token, account=account)
    assert not provider.is_configured()
    with pytest.raises(InvalidRequest) as info:
        await provider.generate(make_request())
    for name in missing:
        assert name in info.value.message
    assert fake.requests == []
