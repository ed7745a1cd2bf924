"""The published OpenAPI document is a contract a generator can use as it stands: a client made
by `openapi-python-client` from the app's own schema, with no hand edits, drives the API end to
end (no hand-written HTTP in this test), and every body it gets back parses into its models."""

from __future__ import annotations

import importlib
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.flows import png_bytes

GENERATOR = Path(sys.executable).parent / "openapi-python-client"


@pytest.fixture
def client_package(app: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    if not GENERATOR.exists():
        pytest.fail("openapi-python-client is a dev dependency; run uv sync")
    schema = tmp_path / "openapi.json"
    schema.write_text(json.dumps(app.openapi()))
    name = "flowstudio_generated_client"
    result = subprocess.run(
        [
            str(GENERATOR),
            "generate",
            "--path",
            str(schema),
            "--meta",
            "none",
            "--output-path",
            str(tmp_path / name),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # Only the raw image responses (png/jpeg/webp bytes) are beyond this generator.
    warnings = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if line.startswith("WARNING")
        and "/image" not in line
        and "/thumbnail" not in line
        and "/download" not in line
    ]
    assert not warnings, result.stdout
    monkeypatch.syspath_prepend(str(tmp_path))
    package = importlib.import_module(name)
    yield package
    for module in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        del sys.modules[module]
    shutil.rmtree(tmp_path / name, ignore_errors=True)


def _api(package: Any, module: str) -> Any:
    return importlib.import_module(f"{package.__name__}.api.{module}")


def _models(package: Any) -> Any:
    return importlib.import_module(f"{package.__name__}.models")


async def test_a_generated_client_drives_the_api(app, live_server, client_package):
    pkg = client_package
    models = _models(pkg)
    types = importlib.import_module(f"{pkg.__name__}.types")
    client_module = importlib.import_module(f"{pkg.__name__}.client")

    # Sign up with the session cookie, then make an API token with the CSRF header.
    browser = client_module.Client(base_url=live_server, raise_on_unexpected_status=True)
    signed = await _api(pkg, "auth.auth_register").asyncio_detailed(
        client=browser,
        body=models.Credentials(email="gen@example.com", password="a long password"),
    )
    assert signed.status_code == 201, signed.content
    csrf = signed.parsed.csrf_token
    created = await _api(pkg, "auth.token_create").asyncio_detailed(
        client=browser, body=models.TokenCreate(name="generated"), x_csrf_token=csrf
    )
    assert created.status_code == 201, created.content
    api = client_module.AuthenticatedClient(
        base_url=live_server, token=created.parsed.token, raise_on_unexpected_status=True
    )

    run = (
        await _api(pkg, "runs.run_start").asyncio_detailed(
            "product-shot",
            client=api,
            body=models.RunCreate(inputs=models.RunCreateInputs.from_dict({"product": "a mug"})),
        )
    ).parsed
    assert isinstance(run, models.RunRead)

    generate = _api(pkg, "generations.run_generate")
    one = await generate.asyncio_detailed(
        run.id, "object", client=api, body=models.GenerateBody(count=1), prefer="wait=20"
    )
    three = await generate.asyncio_detailed(
        run.id, "object", client=api, body=models.GenerateBody(count=3), prefer="wait=20"
    )
    assert one.status_code == 200 and len(one.parsed.generations) == 1
    assert three.status_code == 200 and len(three.parsed.generations) == 3
    assert {g.status.value for g in three.parsed.generations} == {"succeeded"}

    uploaded = await _api(pkg, "generations.step_upload").asyncio_detailed(
        run.id,
        "object",
        client=api,
        body=models.BodyStepUpload(
            file=types.File(
                payload=io.BytesIO(png_bytes((10, 120, 200))),
                file_name="mug.png",
                mime_type="image/png",
            )
        ),
    )
    assert uploaded.status_code == 201, uploaded.content
    assert uploaded.parsed.source.value == "upload"

    adopted = await _api(pkg, "runs.step_adopt").asyncio_detailed(
        run.id,
        "object",
        client=api,
        body=models.AdoptBody(generation_id=three.parsed.generations[0].id),
    )
    assert adopted.parsed.adopted_generation_id == three.parsed.generations[0].id
    cleared = await _api(pkg, "runs.step_clear").asyncio_detailed(run.id, "object", client=api)
    assert cleared.parsed.adopted_generation_id is None

    history_list = _api(pkg, "history.history_list")
    seen = []
    cursor = types.UNSET
    while True:
        page = (await history_list.asyncio_detailed(client=api, limit=2, cursor=cursor)).parsed
        seen.extend(item.id for item in page.items)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert len(seen) == len(set(seen)) == 5

    target = three.parsed.generations[1].id
    detail = await _api(pkg, "history.generation_get").asyncio_detailed(target, client=api)
    assert detail.parsed.id == target and detail.parsed.asset is not None
    deleted = await _api(pkg, "history.generation_delete").asyncio_detailed(target, client=api)
    assert deleted.parsed.purged is False and deleted.parsed.purge_after is not None
    restored = await _api(pkg, "history.generation_restore").asyncio_detailed(target, client=api)
    assert restored.parsed.deleted_at is None

    # Errors parse as Problem, with the fields the server always sends.
    missing = await _api(pkg, "history.generation_get").asyncio_detailed(
        "00000000-0000-7000-8000-000000000000", client=api
    )
    assert missing.status_code == 404
    assert isinstance(missing.parsed, models.Problem)
    assert missing.parsed.code == "not_found" and missing.parsed.instance
