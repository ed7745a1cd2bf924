"""The API fuzzed by schemathesis against its own OpenAPI schema, and that schema's promises.

schemathesis reads ``/openapi.json`` from the running app (uvicorn on a loopback port, so the
event stream streams the way it does for a browser) and sends every operation generated and
mutated requests, authenticated with an API token. Besides fully generated cases, path ids (and
the bodies of adopt, upload, login and batch delete) are drawn from a seeded user's real data,
so every operation reaches its success path too, not only its 4xx. Every response must be a
documented status with the documented content type, headers and schema; never a 5xx; and a
request that violates the schema must be refused.

``FLOWSTUDIO_FUZZ_EXAMPLES`` (default 25) sets the examples per operation; CI runs the default,
a longer local search is e.g. ``FLOWSTUDIO_FUZZ_EXAMPLES=500``. Hypothesis runs derandomized
and without its example database, so every run sends the same cases.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import load_all_checks
from schemathesis.core.failures import FailureGroup
from schemathesis.generation import GenerationMode

from flowstudio.app import create_app
from flowstudio.config import Settings
from flowstudio.errors import PROBLEM_JSON
from tests.api.support import PUBLIC_OPERATIONS, UNSAFE_METHODS, operations
from tests.fixtures.app import sign_up
from tests.fixtures.flows import adopt, generate_ok, png_bytes, start_run

FUZZ_EXAMPLES = int(os.environ.get("FLOWSTUDIO_FUZZ_EXAMPLES", "25"))
# A request that opens the event stream with a real run id lasts until the read timeout.
STREAM_EXAMPLES = 5
STREAM_SECONDS = 1.0
REQUEST_SECONDS = 60.0
PASSWORD = "fuzzing is fun"

# Small images, so that the candidates the fuzzer asks for cost the worker little.
SKETCH_FLOW = """
slug = "sketch"
title = "Sketch"
description = "A draft, then a final drawing from it."

[[inputs]]
name = "subject"
label = "Subject"
default = "a kite"

[[steps]]
id = "draft"
title = "Draft"
kind = "generate"
prompt = "A pencil draft of {subject}"
size = "64x64"

[[steps]]
id = "final"
title = "Final"
kind = "edit"
inputs = ["draft"]
prompt = "Ink the draft of {subject}"
size = "64x64"
"""


def _checks() -> list[Any]:
    load_all_checks()
    from schemathesis import checks

    return [
        checks.not_a_server_error,
        checks.status_code_conformance,
        checks.content_type_conformance,
        checks.response_schema_conformance,
        checks.response_headers_conformance,
        # Negative (schema-violating) requests must be rejected with a 4xx.
        checks.negative_data_rejection,
        checks.missing_required_header,
        # Not run: positive_data_acceptance (a valid-looking random id is rightly 404, a
        # valid-looking cursor 400); unsupported_method/allow_header_conformance (anything under
        # /api the router does not know is a problem+json 404, by design); the stateful checks
        # (use_after_free, ensure_resource_availability) and ignored_auth /
        # object_level_authorization, which need links or declared security schemes — the
        # authorization properties are tests/api/test_authorization.py.
    ]


@pytest.fixture
def settings_overrides(tmp_path) -> dict[str, Any]:
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "sketch.toml").write_text(SKETCH_FLOW)
    return {"flows_dir": flows}


@dataclass
class Seeds:
    token: str
    path_values: dict[str, list[str]] = field(default_factory=dict)
    bodies: dict[str, st.SearchStrategy[Any]] = field(default_factory=dict)


async def seed(app: Any) -> Seeds:
    """A user with a run whose steps have an adoption, a failed, a trashed and an uploaded
    candidate; an API token to fuzz with and a spare one for the fuzzer to revoke."""
    session = await sign_up(app, "fuzz@example.com", PASSWORD)
    try:
        tokens = []
        for name in ("fuzzer", "spare"):
            response = await session.post("/api/auth/tokens", json={"name": name})
            assert response.status_code == 201, response.text
            tokens.append(response.json())
        run = await start_run(session, "sketch", subject="a kite")
        drafts = await generate_ok(session, run["id"], "draft", count=2)
        await adopt(session, run["id"], "draft", drafts[0]["id"])
        [failed] = await generate_ok(session, run["id"], "draft", prompt="x [fail:invalid_request]")
        [final] = await generate_ok(session, run["id"], "final")
        assert (await session.delete(f"/api/history/{final['id']}")).status_code == 200
        upload = await session.post(
            f"/api/runs/{run['id']}/steps/draft/assets",
            files={"file": ("kite.png", png_bytes((90, 30, 200)), "image/png")},
        )
        assert upload.status_code == 201, upload.text
    finally:
        await session.http.aclose()
    generation_ids = [g["id"] for g in (*drafts, failed, final, upload.json())]
    return Seeds(
        token=tokens[0]["token"],
        path_values={
            "run_id": [run["id"]],
            "step_id": ["draft", "final"],
            "generation_id": generation_ids,
            "token_id": [tokens[1]["id"]],
            "slug": ["sketch", "quick"],
        },
        bodies={
            "POST /api/runs/{run_id}/steps/{step_id}/adopt": st.fixed_dictionaries(
                {"generation_id": st.sampled_from(generation_ids)}
            ),
            "POST /api/runs/{run_id}/steps/{step_id}/assets": st.sampled_from(
                [(90, 30, 200), (30, 200, 90)]
            ).map(lambda color: {"file": png_bytes(color)}),
            "POST /api/auth/login": st.just({"email": "fuzz@example.com", "password": PASSWORD}),
            "POST /api/history/delete": st.fixed_dictionaries(
                {"ids": st.lists(st.sampled_from(generation_ids), min_size=1, max_size=3)}
            ),
        },
    )


def fuzz_operation(
    operation: Any,
    *,
    base_url: str,
    seeds: Seeds,
    checks: list[Any],
    counts: Counter[str],
    statuses: Counter[tuple[str, int]],
) -> None:
    label = f"{operation.method.upper()} {operation.path}"
    streams = operation.path.endswith("/events")
    names = [parameter.name for parameter in operation.path_parameters]
    strategies = [operation.as_strategy(GenerationMode.POSITIVE)]
    if names:
        real = st.fixed_dictionaries({n: st.sampled_from(seeds.path_values[n]) for n in names})
        strategies.append(
            real.flatmap(
                lambda values: operation.as_strategy(
                    GenerationMode.POSITIVE, path_parameters=values
                )
            )
        )
    real_body = seeds.bodies.get(label)
    if real_body is not None:
        # Path ids and the body both real: the operation's own success path.
        real = st.fixed_dictionaries({n: st.sampled_from(seeds.path_values[n]) for n in names})
        strategies.append(
            st.tuples(real, real_body).flatmap(
                lambda drawn: operation.as_strategy(
                    GenerationMode.POSITIVE, path_parameters=drawn[0], body=drawn[1]
                )
            )
        )
    if names or operation.body or operation.query or operation.headers:
        strategies.append(operation.as_strategy(GenerationMode.NEGATIVE))
    headers = {"Authorization": f"Bearer {seeds.token}"}

    @settings(
        max_examples=STREAM_EXAMPLES if streams else FUZZ_EXAMPLES,
        derandomize=True,  # the same cases on every run
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=st.one_of(strategies))
    def run(case: Any) -> None:
        counts[label] += 1
        response = case.call_and_validate(
            base_url=base_url,
            headers=headers,
            checks=checks,
            timeout=STREAM_SECONDS if streams else REQUEST_SECONDS,
        )
        statuses[label, response.status_code] += 1

    run()


def fuzz(base_url: str, seeds: Seeds) -> tuple[Counter[str], Counter[tuple[str, int]], list[str]]:
    """Every operation, positive and negative; returns cases run per operation and failures."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    checks = _checks()
    counts: Counter[str] = Counter()
    failures: list[str] = []
    statuses: Counter[tuple[str, int]] = Counter()
    # Deleting comes last, so that the other operations still find the seeded ids.
    all_operations = sorted(
        (result.ok() for result in schema.get_all_operations()),
        key=lambda op: op.method.upper() == "DELETE" or op.path.endswith("/delete"),
    )
    for operation in all_operations:
        try:
            fuzz_operation(
                operation,
                base_url=base_url,
                seeds=seeds,
                checks=checks,
                counts=counts,
                statuses=statuses,
            )
        except (Exception, FailureGroup) as exc:  # noqa: BLE001 — one report for all operations
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}")
    return counts, statuses, failures


async def test_fuzzing_finds_no_server_error_and_no_schema_violation(app, live_server) -> None:
    seeds = await seed(app)
    counts, statuses, failures = await asyncio.to_thread(fuzz, live_server, seeds)
    answered = {label for (label, status), _ in statuses.items() if status < 400}
    print(
        f"\nschemathesis: {len(counts)} operations, {sum(counts.values())} cases "
        f"(at most {FUZZ_EXAMPLES} per operation), "
        f"{sum(n for (_, status), n in statuses.items() if status < 400)} answered 2xx/3xx"
    )
    for (label, status), n in sorted(statuses.items()):
        print(f"  {label} -> {status} x{n}")
    assert not failures, "\n\n".join(failures)
    assert set(counts) == {op.label for op in operations(app)}
    # The seeded ids and bodies reach every operation's success path, not only its 4xx.
    assert answered == set(counts), set(counts) - answered


# -- what the schema promises ----------------------------------------------------------------


@pytest.fixture
def schema(tmp_path) -> dict[str, Any]:
    return create_app(Settings(_env_file=None, data_dir=tmp_path, secret_key="k" * 40)).openapi()


def test_every_error_response_is_documented_as_problem_json(schema) -> None:
    problem = {"schema": {"$ref": "#/components/schemas/Problem"}}
    errors = 0
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                if status.startswith(("4", "5")):
                    assert response["content"] == {PROBLEM_JSON: problem}, (method, path, status)
                    errors += 1
    assert errors > 50
    assert {"type", "title", "status", "detail", "code"} <= set(
        schema["components"]["schemas"]["Problem"]["required"]
    )
    # FastAPI's default validation shape is not what this API sends.
    assert "HTTPValidationError" not in schema["components"]["schemas"]


def test_every_operation_documents_the_statuses_it_can_return(schema, tmp_path) -> None:
    app = create_app(Settings(_env_file=None, data_dir=tmp_path, secret_key="k" * 40))
    for operation in operations(app):
        documented = set(schema["paths"][operation.path][operation.method.lower()]["responses"])
        public = (operation.method, operation.path) in PUBLIC_OPERATIONS
        if not public and operation.path.startswith("/api/"):
            assert "401" in documented, operation.label
            if operation.method in UNSAFE_METHODS:
                assert "403" in documented, operation.label  # csrf_failed
        if operation.path_params and operation.path != "/api/flows/{slug}":
            assert {"404", "422"} <= documented, operation.label
