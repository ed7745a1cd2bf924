"""End to end through the app and its worker (SQLite and PostgreSQL): a flow whose steps use
the real providers, pointed at the fake APIs, records each outcome on the generation row —
success with the provider's request id and metadata, a retry with the provider's
Retry-After, or a failure with the normalised code and message — and never stores a key."""

from __future__ import annotations

import base64
import logging
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from flowstudio.generations.models import Generation
from tests.fixtures.flows import generate, start_run, wait_until
from tests.providers.contract.fakeserver import json_reply, raw_reply, slow

OPENAI_KEY = "sk-e2e-SECRET-openai-0123456789"
GEMINI_KEY = "AIza-e2e-SECRET-gemini-0123456789"
CLOUDFLARE_TOKEN = "cf-e2e-SECRET-token-0123456789"
REPLICATE_TOKEN = "r8_e2e_SECRET_replicate_0123456789"
SECRETS = (OPENAI_KEY, GEMINI_KEY, CLOUDFLARE_TOKEN, REPLICATE_TOKEN)
ACCOUNT = "acc0123456789"

FLOW = """
slug = "contract"
title = "Contract"

[[steps]]
id = "openai"
prompt = "a red fox in fresh snow"
provider = "openai"
model = "gpt-image-1"
options = { quality = "low" }

[[steps]]
id = "gemini"
prompt = "a lighthouse at dusk"
provider = "gemini"
model = "gemini-2.5-flash-image"
temperature = 0.3

[[steps]]
id = "cloudflare"
prompt = "a cyberpunk lizard"
provider = "cloudflare"
model = "@cf/black-forest-labs/flux-1-schnell"

[[steps]]
id = "replicate"
prompt = "an astronaut riding a horse"
provider = "replicate"
model = "black-forest-labs/flux-schnell"
"""

OPENAI_PATH = "/v1/images/generations"
GEMINI_PATH = "/v1beta/models/gemini-2.5-flash-image:generateContent"
CLOUDFLARE_PATH = f"/client/v4/accounts/{ACCOUNT}/ai/run/@cf/black-forest-labs/flux-1-schnell"
REPLICATE_PATH = "/v1/models/black-forest-labs/flux-schnell/predictions"


@pytest.fixture
def flows_dir(tmp_path: Path) -> Path:
    path = tmp_path / "flows"
    path.mkdir()
    (path / "contract.toml").write_text(FLOW)
    return path


@pytest.fixture
def settings_overrides(fake, flows_dir, request) -> dict[str, Any]:
    values: dict[str, Any] = {
        "flows_dir": flows_dir,
        "openai_api_key": OPENAI_KEY,
        "openai_base_url": f"{fake.url}/v1",
        "gemini_api_key": GEMINI_KEY,
        "gemini_base_url": f"{fake.url}/v1beta",
        "cloudflare_account_id": ACCOUNT,
        "cloudflare_api_token": CLOUDFLARE_TOKEN,
        "cloudflare_base_url": f"{fake.url}/client/v4",
        "replicate_api_token": REPLICATE_TOKEN,
        "replicate_base_url": f"{fake.url}/v1",
        "replicate_poll_interval_seconds": 0.02,
        "provider_connect_timeout_seconds": 2.0,
        "provider_read_timeout_seconds": 3.0,
        "max_attempts": 1,
    }
    values.update(getattr(request, "param", {}))
    return values


def with_settings(**values: Any):
    return pytest.mark.parametrize("settings_overrides", [values], indirect=True)


async def generate_one(user, step: str, *, wait: bool = True) -> dict:
    run = await start_run(user, "contract")
    response = await generate(user, run["id"], step, wait=wait)
    assert response.status_code in (200, 202), response.text
    [generation] = response.json()["generations"]
    return generation


async def load_row(app, generation_id: str) -> Generation:
    async with app.state.ctx.sessions() as db:
        row = await db.scalar(select(Generation).where(Generation.id == uuid.UUID(generation_id)))
        assert row is not None
        return row


async def assert_no_secret_stored(app) -> None:
    async with app.state.ctx.sessions() as db:
        rows = (await db.scalars(select(Generation))).all()
    for row in rows:
        stored = repr({c.key: getattr(row, c.key) for c in Generation.__table__.columns})
        for secret in SECRETS:
            assert secret not in stored


async def test_success_records_request_id_model_and_provider_metadata(
    app, alice, fake, png_b64, png, caplog
):
    caplog.set_level(logging.DEBUG)
    body = {
        "created": 1713833628,
        "data": [{"b64_json": png_b64, "revised_prompt": "A red fox standing in fresh snow."}],
        "size": "1024x1024",
        "quality": "low",
        "output_format": "png",
        "usage": {"total_tokens": 300},
    }
    fake.route("POST", OPENAI_PATH, json_reply(body, headers={"x-request-id": "req_e2e_ok"}))

    generation = await generate_one(alice, "openai")

    assert generation["status"] == "succeeded", generation
    assert generation["provider"] == "openai" and generation["model"] == "gpt-image-1"
    assert generation["provider_request_id"] == "req_e2e_ok"
    assert generation["error"] is None
    provider_meta = generation["output"]["provider"]
    assert provider_meta["revised_prompt"] == "A red fox standing in fresh snow."
    assert provider_meta["quality"] == "low"
    assert provider_meta["ignored_settings"] == ["temperature", "seed"]
    assert generation["asset"]["mime"] == "image/png"
    assert await app.state.ctx.store.get(generation["asset"]["key"]) == png
    sent = fake.requests_to(OPENAI_PATH)[0].json()
    assert sent["prompt"] == "a red fox in fresh snow" and sent["quality"] == "low"
    await assert_no_secret_stored(app)
    for secret in SECRETS:
        assert secret not in caplog.text


async def test_gemini_temperature_reaches_the_api_and_the_row(app, alice, fake, png_b64):
    body = {
        "candidates": [
            {
                "content": {"parts": [{"inlineData": {"mimeType": "image/png", "data": png_b64}}]},
                "finishReason": "STOP",
            }
        ],
        "modelVersion": "gemini-2.5-flash-image-001",
        "responseId": "resp-e2e",
    }
    fake.route("POST", GEMINI_PATH, json_reply(body))
    generation = await generate_one(alice, "gemini")
    assert generation["status"] == "succeeded", generation
    assert generation["temperature"] == 0.3
    sent = fake.requests_to(GEMINI_PATH)[0]
    assert sent.json()["generationConfig"]["temperature"] == 0.3
    assert sent.json()["generationConfig"]["seed"] == generation["seed"] % 2**31
    assert generation["provider_request_id"] == "resp-e2e"
    assert generation["output"]["provider"]["model_version"] == "gemini-2.5-flash-image-001"


async def test_content_policy_refusal_is_a_failed_row(app, alice, fake):
    fake.route(
        "POST",
        GEMINI_PATH,
        json_reply({"promptFeedback": {"blockReason": "SAFETY"}, "responseId": "resp-blocked"}),
    )
    generation = await generate_one(alice, "gemini")
    assert generation["status"] == "failed"
    assert generation["error"]["code"] == "content_blocked"
    assert "SAFETY" in generation["error"]["message"]
    assert generation["provider_request_id"] == "resp-blocked"
    assert generation["asset"] is None
    assert generation["attempts"] == 1


@with_settings(max_attempts=3)
async def test_rate_limit_returns_the_row_to_pending_after_retry_after(app, alice, fake):
    fake.route(
        "POST",
        CLOUDFLARE_PATH,
        json_reply(
            {
                "result": None,
                "success": False,
                "errors": [{"code": 3036, "message": "daily free allocation used up"}],
                "messages": [],
            },
            429,
            {"retry-after": "30", "cf-ray": "ray-e2e-429"},
        ),
    )
    generation = await generate_one(alice, "cloudflare", wait=False)

    async def rate_limited() -> Generation | None:
        row = await load_row(app, generation["id"])
        return row if row.error_code == "rate_limited" else None

    row = await wait_until(rate_limited)
    assert row.status == "pending"  # attempts left: it will run again
    assert row.attempts == 1
    assert row.provider_request_id == "ray-e2e-429"
    assert "HTTP 429" in row.error_message and "error 3036" in row.error_message
    delay = row.next_attempt_at - row.updated_at
    assert timedelta(seconds=29) <= delay <= timedelta(seconds=31)  # Retry-After honoured


@with_settings(max_attempts=2)
async def test_server_error_is_retried_and_then_succeeds(app, alice, fake, jpeg):
    image = base64.b64encode(jpeg).decode()
    fake.route(
        "POST",
        CLOUDFLARE_PATH,
        json_reply(
            {"success": False, "errors": [{"code": 7000, "message": "oops"}], "result": None},
            500,
            {"retry-after": "0"},
        ),
        json_reply({"success": True, "errors": [], "messages": [], "result": {"image": image}}),
    )
    generation = await generate_one(alice, "cloudflare")
    assert generation["status"] == "succeeded", generation
    assert generation["attempts"] == 2
    assert generation["error"] is None
    assert generation["asset"]["mime"] == "image/jpeg"
    assert len(fake.requests_to(CLOUDFLARE_PATH)) == 2


@with_settings(max_attempts=3)
async def test_invalid_request_fails_at_once(app, alice, fake):
    fake.route(
        "POST",
        OPENAI_PATH,
        json_reply(
            {
                "error": {
                    "message": "Invalid value: 'ultra'. Supported values are: 'low', 'high'.",
                    "type": "invalid_request_error",
                    "param": "quality",
                    "code": "invalid_value",
                }
            },
            400,
            {"x-request-id": "req_e2e_400"},
        ),
    )
    generation = await generate_one(alice, "openai")
    assert generation["status"] == "failed"
    assert generation["attempts"] == 1  # not retryable
    assert generation["error"]["code"] == "invalid_request"
    assert "Invalid value: 'ultra'" in generation["error"]["message"]
    assert generation["provider_request_id"] == "req_e2e_400"


async def test_unauthorised_key_fails_naming_the_setting(app, alice, fake):
    fake.route(
        "POST",
        OPENAI_PATH,
        json_reply(
            {
                "error": {
                    "message": f"Incorrect API key provided: {OPENAI_KEY}",
                    "code": "invalid_api_key",
                }
            },
            401,
        ),
    )
    generation = await generate_one(alice, "openai")
    assert generation["error"]["code"] == "invalid_request"
    assert "FLOWSTUDIO_OPENAI_API_KEY" in generation["error"]["message"]
    await assert_no_secret_stored(app)


async def test_malformed_json_is_a_provider_error(app, alice, fake):
    fake.route("POST", GEMINI_PATH, raw_reply("{not json", 200))
    generation = await generate_one(alice, "gemini")
    assert generation["status"] == "failed"
    assert generation["error"]["code"] == "provider_error"
    assert "not JSON" in generation["error"]["message"]


@with_settings(provider_read_timeout_seconds=0.3)
async def test_slow_provider_is_a_timeout(app, alice, fake, jpeg):
    body = {"success": True, "result": {"image": base64.b64encode(jpeg).decode()}}
    fake.route("POST", CLOUDFLARE_PATH, slow(fake, 3.0, json_reply(body)))
    generation = await generate_one(alice, "cloudflare")
    assert generation["status"] == "failed"
    assert generation["error"]["code"] == "provider_timeout"
    assert "0.3 s" in generation["error"]["message"]


@with_settings(provider_timeout_seconds=0.5)
async def test_worker_timeout_cancels_the_replicate_prediction(app, alice, fake):
    def prediction(status: str) -> dict:
        return {"id": "pred_e2e", "status": status, "version": "v1", "output": None, "error": None}

    fake.route("POST", REPLICATE_PATH, json_reply(prediction("starting"), 201))
    fake.route("GET", "/v1/predictions/pred_e2e", json_reply(prediction("processing")))
    fake.route("POST", "/v1/predictions/pred_e2e/cancel", json_reply(prediction("canceled")))
    generation = await generate_one(alice, "replicate")
    assert generation["status"] == "failed"
    assert generation["error"]["code"] == "provider_timeout"
    assert "0.5 s" in generation["error"]["message"]
    await wait_until(lambda: _has(fake, "/v1/predictions/pred_e2e/cancel"))
    create = fake.requests_to(REPLICATE_PATH)[0]
    assert create.headers["cancel-after"] == "1m"  # provider_timeout_seconds + 30 s, in minutes


async def _has(fake, path: str) -> bool:
    return bool(fake.requests_to(path, "POST"))


@with_settings(openai_api_key=None)
async def test_unconfigured_provider_fails_the_generation_with_the_setting(app, alice, fake):
    generation = await generate_one(alice, "openai")
    assert generation["status"] == "failed"
    assert generation["error"]["code"] == "invalid_request"
    assert "FLOWSTUDIO_OPENAI_API_KEY" in generation["error"]["message"]
    assert fake.requests == []
