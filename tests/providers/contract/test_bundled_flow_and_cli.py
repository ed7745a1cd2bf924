"""The bundled real-provider flow, `flowstudio providers`, and the registry built from settings."""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner

from flowstudio.app import build_providers
from flowstudio.cli import app as cli
from flowstudio.config import Settings
from flowstudio.flows import FlowRegistry
from flowstudio.providers.openai import OpenAIProvider
from tests.fixtures.flows import adopt, generate_ok, start_run
from tests.providers.contract.fakeserver import json_reply

FLOW = "product-shot-openai"
KEY = "sk-bundled-SECRET-0123456789"
REAL = ("openai", "gemini", "cloudflare", "replicate")


def test_bundled_flow_points_every_step_at_openai():
    flow = FlowRegistry.load().get(FLOW)
    assert [(s.id, s.kind, s.inputs) for s in flow.steps] == [
        ("object", "generate", ()),
        ("scene", "edit", ("object",)),
        ("poster", "edit", ("scene", "object")),
    ]
    for step in flow.steps:
        assert step.provider == "openai"
        assert step.model in OpenAIProvider.MODELS
        assert set(step.options) <= set(OpenAIProvider.OPTIONS)
    assert "FLOWSTUDIO_OPENAI_API_KEY" in flow.description


def test_registry_has_every_provider_and_only_local_is_configured_by_default(tmp_path):
    settings = Settings(_env_file=None, data_dir=tmp_path)
    registry = build_providers(settings)
    assert registry.names() == ("local", *REAL)
    assert registry.configured_names() == ("local",)
    # This directory's guard points the base URLs at a closed local port ...
    assert registry.get("openai").base_url == "http://127.0.0.1:9"
    # ... the defaults are the providers' public endpoints.
    defaults = {name: field.default for name, field in Settings.model_fields.items()}
    assert defaults["openai_base_url"] == "https://api.openai.com/v1"
    assert defaults["gemini_base_url"] == "https://generativelanguage.googleapis.com/v1beta"
    assert defaults["cloudflare_base_url"] == "https://api.cloudflare.com/client/v4"
    assert defaults["replicate_base_url"] == "https://api.replicate.com/v1"


def test_keys_configure_providers_and_stay_secret(tmp_path):
    settings = Settings(
        _env_file=None,
        data_dir=tmp_path,
        openai_api_key=KEY,
        gemini_api_key="g-" + KEY,
        cloudflare_account_id="acc1",
        cloudflare_api_token="cf-" + KEY,
        replicate_api_token="r8-" + KEY,
    )
    registry = build_providers(settings)
    assert registry.configured_names() == ("local", *REAL)
    assert KEY not in repr(settings) and KEY not in str(settings.model_dump())
    for provider in registry:
        assert KEY not in repr(provider)


def test_providers_command_lists_configuration_and_models(tmp_path, monkeypatch):
    monkeypatch.setenv("FLOWSTUDIO_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("FLOWSTUDIO_GEMINI_API_KEY", KEY)
    result = CliRunner().invoke(cli, ["providers", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.output)}
    assert list(rows) == ["local", *REAL]
    assert rows["gemini"]["configured"] is True
    assert rows["openai"] == {
        "name": "openai",
        "configured": False,
        "missing_settings": ["FLOWSTUDIO_OPENAI_API_KEY"],
        "models": ["gpt-image-1", "gpt-image-1-mini", "gpt-image-1.5"],
    }
    assert rows["cloudflare"]["missing_settings"] == [
        "FLOWSTUDIO_CLOUDFLARE_ACCOUNT_ID",
        "FLOWSTUDIO_CLOUDFLARE_API_TOKEN",
    ]
    assert "@cf/black-forest-labs/flux-1-schnell" in rows["cloudflare"]["models"]
    assert KEY not in result.output

    table = CliRunner().invoke(cli, ["providers"])
    assert table.exit_code == 0
    assert "FLOWSTUDIO_OPENAI_API_KEY" in table.output and KEY not in table.output


def test_settings_help_documents_the_provider_settings():
    result = CliRunner().invoke(cli, ["serve", "--help"])
    for name in ("FLOWSTUDIO_OPENAI_API_KEY", "FLOWSTUDIO_REPLICATE_API_TOKEN"):
        assert name in result.output


# ------------------------------------------------------------------ end to end


@pytest.fixture
def settings_overrides(fake, request) -> dict[str, Any]:
    values: dict[str, Any] = {"openai_base_url": f"{fake.url}/v1", "openai_api_key": None}
    values.update(getattr(request, "param", {}))
    return values


async def test_default_install_fails_the_bundled_flow_with_the_setting_to_set(app, alice, fake):
    run = await start_run(alice, FLOW)
    [generation] = await generate_ok(alice, run["id"], "object")
    assert generation["status"] == "failed"
    assert generation["error"]["code"] == "invalid_request"
    assert "set FLOWSTUDIO_OPENAI_API_KEY" in generation["error"]["message"]
    assert fake.requests == []  # nothing left the machine


@pytest.mark.parametrize("settings_overrides", [{"openai_api_key": KEY}], indirect=True)
async def test_bundled_flow_runs_generate_then_edits(app, alice, fake, png_b64):
    body = {"created": 1, "data": [{"b64_json": png_b64}], "output_format": "png"}
    fake.route("POST", "/v1/images/generations", json_reply(body, headers={"x-request-id": "g"}))
    fake.route("POST", "/v1/images/edits", json_reply(body, headers={"x-request-id": "e"}))
    run = await start_run(alice, FLOW, product="a teapot")

    [obj] = await generate_ok(alice, run["id"], "object")
    assert obj["status"] == "succeeded", obj
    await adopt(alice, run["id"], "object", obj["id"])
    [scene] = await generate_ok(alice, run["id"], "scene")
    assert scene["status"] == "succeeded", scene
    await adopt(alice, run["id"], "scene", scene["id"])
    [poster] = await generate_ok(alice, run["id"], "poster")
    assert poster["status"] == "succeeded", poster

    [first] = fake.requests_to("/v1/images/generations")
    assert first.json()["quality"] == "medium" and "a teapot" in first.json()["prompt"]
    scene_call, poster_call = fake.requests_to("/v1/images/edits")
    assert scene_call.form["size"] == ["1536x1024"]
    assert scene_call.form["input_fidelity"] == ["high"]
    assert len(scene_call.files["image"]) == 1
    assert poster_call.form["size"] == ["1024x1536"]
    assert len(poster_call.files["image[]"]) == 2  # the scene, then the object
    assert poster["provider_request_id"] == "e"
