"""Replicate adapter against a fake Replicate API on 127.0.0.1: create (sync wait), polling,
output download, cancellation and file uploads."""

from __future__ import annotations

import asyncio
import base64
import logging
import re

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
from flowstudio.providers.replicate import ReplicateProvider
from tests.providers.contract.fakeserver import json_reply, raw_reply, slow

TOKEN = "r8_TEST_SECRET_0123456789abcdef"
MODEL = "black-forest-labs/flux-schnell"
CREATE = f"/v1/models/{MODEL}/predictions"
VERSION = "5599ed30703defd1d160a25a63321b4dec97101d98b4674bcc56e41f62f35637"


def make_provider(
    fake, *, read: float = 5.0, token: str | None = TOKEN, **kwargs
) -> ReplicateProvider:
    kwargs.setdefault("poll_interval", 0.01)
    return ReplicateProvider(
        api_token=token,
        base_url=f"{fake.url}/v1",
        timeouts=HttpTimeouts(connect=2, read=read),
        **kwargs,
    )


def make_request(**overrides) -> GenerationRequest:
    values = {
        "prompt": "an astronaut riding a horse",
        "model": MODEL,
        "width": 1024,
        "height": 576,
        "seed": 99,
        "temperature": 1.0,
    }
    values.update(overrides)
    return GenerationRequest(**values)


def prediction(fake, status: str, *, pid: str = "pred_abc123", output=None, error=None) -> dict:
    api = f"{fake.url}/v1"
    return {
        "id": pid,
        "model": MODEL,
        "version": VERSION,
        "input": {"prompt": "an astronaut riding a horse"},
        "logs": "",
        "output": output,
        "data_removed": False,
        "error": error,
        "status": status,
        "created_at": "2025-01-01T00:00:00.000Z",
        "started_at": "2025-01-01T00:00:01.000Z" if status != "starting" else None,
        "completed_at": "2025-01-01T00:00:02.000Z" if status == "succeeded" else None,
        "urls": {
            "get": f"{api}/predictions/{pid}",
            "cancel": f"{api}/predictions/{pid}/cancel",
            "stream": f"{api}/stream/{pid}",
            "web": f"https://replicate.com/p/{pid}",
        },
        "metrics": {"predict_time": 0.61} if status == "succeeded" else {},
    }


def output_url(fake, name: str = "out-0.webp") -> str:
    # A different host name than the API's: output files are on a delivery host.
    return fake.url_for(f"/delivery/{name}", host="localhost")


async def test_sync_create_request_and_result(fake, webp, caplog):
    caplog.set_level(logging.DEBUG)
    fake.route("GET", "/delivery/out-0.webp", raw_reply(webp, content_type="image/webp"))
    fake.route(
        "POST", CREATE, json_reply(prediction(fake, "succeeded", output=[output_url(fake)]), 201)
    )
    async with make_provider(fake, cancel_after_seconds=150) as provider:
        result = await provider.generate(
            make_request(options={"input": {"go_fast": True, "num_outputs": 1}})
        )

    create = fake.requests_to(CREATE)[0]
    assert create.method == "POST"
    assert create.headers["authorization"] == f"Bearer {TOKEN}"
    assert create.headers["prefer"] == "wait=4"  # inside the 5 s read timeout
    assert create.headers["cancel-after"] == "3m"
    assert create.json() == {
        "input": {
            "prompt": "an astronaut riding a horse",
            "seed": 99,
            "aspect_ratio": "16:9",
            "go_fast": True,
            "num_outputs": 1,
        }
    }
    download = fake.requests_to("/delivery/out-0.webp")[0]
    assert "authorization" not in download.headers  # the token stays with the API host
    assert result.image == webp and result.mime == "image/webp"
    assert result.provider_request_id == "pred_abc123"
    assert result.model == MODEL
    assert result.metadata["model_version"] == VERSION
    assert result.metadata["metrics"] == {"predict_time": 0.61}
    assert result.metadata["aspect_ratio"] == "16:9"
    assert result.metadata["ignored_settings"] == ["temperature"]
    assert fake.requests_to("/v1/predictions/pred_abc123/cancel") == []
    assert TOKEN not in caplog.text


async def test_polls_until_the_prediction_succeeds(fake, webp):
    fake.route("GET", "/delivery/out-0.webp", raw_reply(webp, content_type="image/webp"))
    fake.route("POST", CREATE, json_reply(prediction(fake, "starting"), 201))
    fake.route(
        "GET",
        "/v1/predictions/pred_abc123",
        json_reply(prediction(fake, "processing")),
        json_reply(prediction(fake, "processing")),
        json_reply(prediction(fake, "succeeded", output=[output_url(fake)])),
    )
    async with make_provider(fake, read=0.5) as provider:  # too short for Prefer: wait
        result = await provider.generate(make_request())
    assert "prefer" not in fake.requests_to(CREATE)[0].headers
    polls = fake.requests_to("/v1/predictions/pred_abc123", "GET")
    assert len(polls) == 3
    assert all(p.headers["authorization"] == f"Bearer {TOKEN}" for p in polls)
    assert result.image == webp


async def test_sync_mode_output_while_still_processing_is_used(fake, webp):
    fake.route("GET", "/delivery/out-0.webp", raw_reply(webp, content_type="image/webp"))
    fake.route(
        "POST", CREATE, json_reply(prediction(fake, "processing", output=[output_url(fake)]), 201)
    )
    async with make_provider(fake) as provider:
        result = await provider.generate(make_request())
    assert result.image == webp
    assert fake.requests_to("/v1/predictions/pred_abc123", "GET") == []


async def test_version_pinned_models_use_the_predictions_endpoint(fake, png):
    data_uri = "data:image/png;base64," + base64.b64encode(png).decode()
    fake.route(
        "POST", "/v1/predictions", json_reply(prediction(fake, "succeeded", output=data_uri), 201)
    )
    async with make_provider(fake) as provider:
        result = await provider.generate(make_request(model=f"stability-ai/sdxl:{VERSION}"))
    body = fake.requests_to("/v1/predictions")[0].json()
    assert body["version"] == VERSION
    assert body["input"]["prompt"] == "an astronaut riding a horse"
    assert result.image == png


def noise_png(side: int = 160) -> bytes:
    import io
    import random

    from PIL import Image

    rng = random.Random(1)
    image = Image.frombytes(
        "RGB", (side, side), bytes(rng.randrange(256) for _ in range(side * side * 3))
    )
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


async def test_input_images_inline_or_uploaded(fake, png, webp):
    big = noise_png()
    assert len(big) > len(png)
    fake.route("GET", "/delivery/out-0.webp", raw_reply(webp, content_type="image/webp"))
    fake.route(
        "POST",
        "/v1/models/google/nano-banana/predictions",
        json_reply(prediction(fake, "succeeded", output=output_url(fake)), 201),
    )
    fake.route(
        "POST",
        "/v1/files",
        json_reply(
            {
                "id": "file_xyz",
                "name": "input-2.png",
                "content_type": "image/png",
                "size": len(big),
                "urls": {"get": "https://api.replicate.com/v1/files/file_xyz"},
            },
            201,
        ),
    )
    fake.route("DELETE", "/v1/files/file_xyz", raw_reply(b"", 204))
    inputs = (InputImage(png, "image/png"), InputImage(big, "image/png"))
    # The small PNG goes inline as a data URI, the big one is uploaded first.
    async with make_provider(fake, inline_input_limit=len(png)) as provider:
        await provider.generate(make_request(model="google/nano-banana", input_images=inputs))

    upload = fake.requests_to("/v1/files", "POST")[0]
    assert upload.headers["authorization"] == f"Bearer {TOKEN}"
    [content] = upload.files["content"]
    assert (content.data, content.content_type, content.filename) == (
        big,
        "image/png",
        "input-2.png",
    )
    body = fake.requests_to("/v1/models/google/nano-banana/predictions")[0].json()
    assert body["input"]["image_input"] == [
        "data:image/png;base64," + base64.b64encode(png).decode(),
        "https://api.replicate.com/v1/files/file_xyz",
    ]
    assert fake.requests_to("/v1/files/file_xyz", "DELETE")  # cleaned up afterwards


async def test_single_input_image_goes_to_input_image(fake, png, webp):
    fake.route("GET", "/delivery/out-0.webp", raw_reply(webp, content_type="image/webp"))
    path = "/v1/models/black-forest-labs/flux-kontext-pro/predictions"
    fake.route(
        "POST", path, json_reply(prediction(fake, "succeeded", output=output_url(fake)), 201)
    )
    async with make_provider(fake) as provider:
        await provider.generate(
            make_request(
                model="black-forest-labs/flux-kontext-pro",
                input_images=(InputImage(png, "image/png"),),
            )
        )
    body = fake.requests_to(path)[0].json()
    assert body["input"]["input_image"] == "data:image/png;base64," + base64.b64encode(png).decode()


async def test_single_image_models_refuse_two_inputs(fake, png):
    async with make_provider(fake) as provider:
        with pytest.raises(InvalidRequest) as info:
            await provider.generate(
                make_request(
                    model="black-forest-labs/flux-kontext-pro",
                    input_images=(InputImage(png, "image/png"),) * 2,
                )
            )
    assert "input_image" in info.value.message
    assert fake.requests == []


HTTP_FAILURES = [
    pytest.param(
        json_reply(
            {
                "title": "Input validation failed",
                "detail": "- input.aspect_ratio: aspect_ratio must be one of the following",
                "status": 422,
                "invalid_fields": [
                    {
                        "type": "enum",
                        "field": "input.aspect_ratio",
                        "description": "must be one of ...",
                    }
                ],
            },
            422,
        ),
        InvalidRequest,
        None,
        ["HTTP 422", "input.aspect_ratio"],
        id="422",
    ),
    pytest.param(
        json_reply({"title": "Bad request", "detail": "Invalid JSON body", "status": 400}, 400),
        InvalidRequest,
        None,
        ["HTTP 400", "Invalid JSON body"],
        id="400",
    ),
    pytest.param(
        json_reply(
            {
                "title": "Unauthenticated",
                "detail": "You did not pass a valid authentication token",
                "status": 401,
            },
            401,
        ),
        InvalidRequest,
        None,
        ["HTTP 401", "FLOWSTUDIO_REPLICATE_API_TOKEN"],
        id="401",
    ),
    pytest.param(
        json_reply(
            {
                "title": "Request was throttled",
                "detail": "Request was throttled. Expected available in 9 seconds.",
                "status": 429,
            },
            429,
            {"retry-after": "9"},
        ),
        RateLimited,
        9.0,
        ["HTTP 429", "throttled"],
        id="429-retry-after",
    ),
    pytest.param(
        json_reply({"title": "Internal Server Error", "status": 500}, 500),
        ProviderUnavailable,
        None,
        ["HTTP 500"],
        id="500",
    ),
    pytest.param(
        raw_reply('{"id": "pred_1", "status": ', 201),
        ProviderFailure,
        None,
        ["not valid JSON"],
        id="malformed-json",
    ),
]


@pytest.mark.parametrize(("reply", "error_class", "retry_after", "fragments"), HTTP_FAILURES)
async def test_http_failures_are_normalised(fake, reply, error_class, retry_after, fragments):
    fake.route("POST", CREATE, reply)
    async with make_provider(fake) as provider:
        with pytest.raises(error_class) as info:
            await provider.generate(make_request())
    error = info.value
    assert type(error) is error_class
    assert error.retry_after == retry_after
    for fragment in fragments:
        assert fragment in error.message
    assert TOKEN not in error.message


@pytest.mark.parametrize(
    ("status", "error", "error_class", "fragment"),
    [
        pytest.param(
            "failed",
            "NSFW content detected. Try running it again, or try a different prompt.",
            ContentBlocked,
            "NSFW",
            id="nsfw",
        ),
        pytest.param(
            "failed",
            "The input or output was flagged as sensitive. Please try again with different "
            "inputs. (E005)",
            ContentBlocked,
            "E005",
            id="content-policy-e005",
        ),
        pytest.param(
            "failed", "CUDA out of memory", ProviderFailure, "CUDA out of memory", id="model-error"
        ),
        pytest.param("canceled", None, ProviderFailure, "canceled", id="canceled"),
    ],
)
async def test_finished_predictions_without_output(fake, status, error, error_class, fragment):
    fake.route("POST", CREATE, json_reply(prediction(fake, "starting"), 201))
    fake.route(
        "GET", "/v1/predictions/pred_abc123", json_reply(prediction(fake, status, error=error))
    )
    async with make_provider(fake) as provider:
        with pytest.raises(error_class) as info:
            await provider.generate(make_request())
    assert type(info.value) is error_class
    assert fragment in info.value.message
    assert info.value.provider_request_id == "pred_abc123"
    # A prediction that ended on its own is not canceled.
    assert fake.requests_to("/v1/predictions/pred_abc123/cancel") == []


async def test_slow_create_is_a_provider_timeout(fake):
    fake.route("POST", CREATE, slow(fake, 2.0, json_reply(prediction(fake, "starting"), 201)))
    async with make_provider(fake, read=0.3) as provider:
        with pytest.raises(ProviderTimeout):
            await provider.generate(make_request())


async def test_our_timeout_cancels_the_prediction(fake):
    fake.route("POST", CREATE, json_reply(prediction(fake, "starting"), 201))
    fake.route("GET", "/v1/predictions/pred_abc123", json_reply(prediction(fake, "processing")))
    fake.route(
        "POST", "/v1/predictions/pred_abc123/cancel", json_reply(prediction(fake, "canceled"))
    )
    async with make_provider(fake) as provider:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):  # what the worker does with provider_timeout_seconds
                await provider.generate(make_request())
    [cancel] = fake.requests_to("/v1/predictions/pred_abc123/cancel", "POST")
    assert cancel.headers["authorization"] == f"Bearer {TOKEN}"


async def test_persistent_poll_failures_fail_and_cancel(fake):
    fake.route("POST", CREATE, json_reply(prediction(fake, "starting"), 201))
    fake.route(
        "GET",
        "/v1/predictions/pred_abc123",
        json_reply({"title": "Bad Gateway", "status": 502}, 502),
    )
    fake.route(
        "POST", "/v1/predictions/pred_abc123/cancel", json_reply(prediction(fake, "canceled"))
    )
    async with make_provider(fake) as provider:
        with pytest.raises(ProviderUnavailable) as info:
            await provider.generate(make_request())
    assert info.value.provider_request_id == "pred_abc123"
    assert len(fake.requests_to("/v1/predictions/pred_abc123", "GET")) == 4  # 3 tolerated
    assert fake.requests_to("/v1/predictions/pred_abc123/cancel", "POST")


async def test_a_passing_poll_failure_is_tolerated(fake, webp):
    fake.route("GET", "/delivery/out-0.webp", raw_reply(webp, content_type="image/webp"))
    fake.route("POST", CREATE, json_reply(prediction(fake, "starting"), 201))
    fake.route(
        "GET",
        re.compile(r"/v1/predictions/pred_abc123"),
        json_reply({"title": "Service Unavailable", "status": 503}, 503),
        json_reply(prediction(fake, "succeeded", output=[output_url(fake)])),
    )
    async with make_provider(fake) as provider:
        result = await provider.generate(make_request())
    assert result.image == webp


async def test_missing_output_file_is_an_error(fake):
    fake.route("GET", "/delivery/out-0.webp", json_reply({"detail": "not found"}, 404))
    fake.route(
        "POST", CREATE, json_reply(prediction(fake, "succeeded", output=[output_url(fake)]), 201)
    )
    async with make_provider(fake) as provider:
        with pytest.raises(ProviderFailure) as info:
            await provider.generate(make_request())
    assert info.value.provider_request_id == "pred_abc123"
    assert "downloading it failed (HTTP 404" in info.value.message
    assert fake.requests_to("/v1/predictions/pred_abc123/cancel") == []


async def test_unconfigured_provider_names_its_setting(fake):
    provider = make_provider(fake, token=None)
    with pytest.raises(InvalidRequest) as info:
        await provider.generate(make_request())
    assert "FLOWSTUDIO_REPLICATE_API_TOKEN" in info.value.message
    assert fake.requests == []


async def test_model_must_be_owner_slash_name(fake):
    async with make_provider(fake) as provider:
        with pytest.raises(InvalidRequest) as info:
            await provider.generate(make_request(model="flux-schnell"))
    assert "owner/name" in info.value.message
