"""Authorization as properties, over every operation of the OpenAPI schema, on both databases.

* Another user's id and an id that does not exist get the same answer: 404 ``not_found``
  (422 ``validation_error`` when the id is not a UUID at all), never 200, 403 or 500; and
  nothing either user owns changes — rows, adoptions, trash state, objects, tokens.
* Without credentials every operation but the public ones is 401 ``unauthenticated``.
* A session cookie without the right ``X-CSRF-Token`` cannot make an unsafe request (403
  ``csrf_failed``), and changes nothing.

The operations come from ``app.openapi()``: a new route is walked without touching this file, and
a path parameter the walk does not know fails ``test_the_walk_knows_every_operation``.

Hypothesis and pytest fixtures: the app and the two users are built once per test by
function-scoped fixtures, and the ``@given`` functions are defined *inside* the test, so hypothesis
never sees a fixture (no ``function_scoped_fixture`` health check to silence). Reusing one world
across examples is sound because the property under test is that an example changes nothing:
every example compares both users' data with the snapshot taken before the first one.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from flowstudio.app import create_app
from flowstudio.config import Settings
from tests.api.support import (
    PUBLIC_OPERATIONS,
    UNSAFE_METHODS,
    Account,
    Operation,
    assert_problem,
    call_soon,
    describe_change,
    operations,
    seed_account,
    snapshot,
)
from tests.fixtures.app import make_client
from tests.fixtures.flows import png_bytes

# What each path parameter names; a new one must be added here (and to `path_value` below).
ID_KINDS = {
    "run_id": "run",
    "step_id": "step",
    "generation_id": "generation",
    "token_id": "token",
    "slug": "flow",
}
# A malformed value of these is rejected by validation (422) before anything is looked up.
UUID_KINDS = frozenset({"run", "generation", "token"})
STEP_NAMES = ("object", "scene", "poster", "image")
FLOW_SLUGS = ("product-shot", "product-shot-openai", "quick", "character-sheet")

EXAMPLES_PER_OPERATION = 12
WALK_SETTINGS = settings(
    max_examples=EXAMPLES_PER_OPERATION,
    derandomize=True,  # the same examples on every run and machine
    database=None,  # nothing to remember between CI runs
    deadline=None,  # a slow shared machine is not a failure
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)


@dataclass
class World:
    app: Any
    attacker: Account
    victim: Account
    loop: asyncio.AbstractEventLoop


@pytest.fixture
async def world(app) -> Any:
    attacker = await seed_account(app, "mallory@example.com")
    victim = await seed_account(app, "victor@example.com")
    yield World(app, attacker, victim, asyncio.get_running_loop())
    await attacker.aclose()
    await victim.aclose()


# -- strategies ------------------------------------------------------------------------------


def _is_uuid(text: str) -> bool:
    try:
        TypeAdapter(uuid.UUID).validate_python(text)
    except ValidationError:
        return False
    return True


@st.composite
def uuid7s(draw: st.DrawFn) -> uuid.UUID:
    millis = draw(st.integers(1_600_000_000_000, 2_000_000_000_000))
    rand_a, rand_b = draw(st.integers(0, 2**12 - 1)), draw(st.integers(0, 2**62 - 1))
    return uuid.UUID(int=(millis << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b)


missing_uuids = st.one_of(uuid7s(), st.uuids(version=4)).map(str)
junk = st.text("abcdefghijklmnopqrstuvwxyz0123456789-_.~", min_size=1, max_size=40)
malformed_uuids = junk.filter(lambda text: not _is_uuid(text) and text not in (".", ".."))
missing_steps = junk.filter(lambda text: text not in STEP_NAMES and text not in (".", ".."))
missing_slugs = junk.filter(lambda text: text not in FLOW_SLUGS and text not in (".", ".."))


def spellings(value: str) -> st.SearchStrategy[str]:
    """The same UUID as the API also accepts it: canonical, upper case, bare hex."""
    return st.sampled_from([value, value.upper(), value.replace("-", "")])


def foreign(ids: list[str]) -> st.SearchStrategy[str]:
    return st.sampled_from(ids).flatmap(spellings)


@dataclass
class Attempt:
    """One drawn request and the answer the contract gives it."""

    method: str
    url: str
    kwargs: dict[str, Any]
    expected: tuple[int, str]
    via: str


BodyStrategy = Callable[[World, dict[str, str]], st.SearchStrategy[dict[str, Any]]]


def no_body(world: World, values: dict[str, str]) -> st.SearchStrategy[dict[str, Any]]:
    return st.just({})


# Valid text: U+0000 is refused before anything is looked up (422), see deps.py.
letters = st.characters(exclude_characters="\x00")


def run_create(world: World, values: dict[str, str]) -> st.SearchStrategy[dict[str, Any]]:
    text = st.text(letters, max_size=30)
    inputs = st.dictionaries(st.sampled_from(["product", "prompt", "setting"]), text)
    body = st.fixed_dictionaries({"inputs": inputs}, optional={"title": text})
    return body.map(lambda b: {"json": b})


def generate_request(world: World, values: dict[str, str]) -> st.SearchStrategy[dict[str, Any]]:
    body = st.fixed_dictionaries(
        {},
        optional={
            "count": st.integers(1, 4),
            "temperature": st.floats(0, 2),
            "seed": st.integers(0, 2**53),
            "prompt": st.text(letters, min_size=1, max_size=40).filter(str.strip),
        },
    )
    headers = st.fixed_dictionaries(
        {},
        optional={
            "Idempotency-Key": st.sampled_from(["retry-1", "retry-2"]),
            "Prefer": st.just("wait=2"),
        },
    )
    return st.builds(lambda b, h: {"json": b, "headers": h}, body, headers)


def upload_request(world: World, values: dict[str, str]) -> st.SearchStrategy[dict[str, Any]]:
    image = st.sampled_from([(200, 40, 40), (40, 200, 40)]).map(png_bytes)
    data = st.one_of(image, st.binary(min_size=1, max_size=64))
    return data.map(lambda d: {"files": {"file": ("upload.png", d, "image/png")}})


def candidate_query(world: World, values: dict[str, str]) -> st.SearchStrategy[dict[str, Any]]:
    params = st.fixed_dictionaries(
        {},
        optional={
            "status": st.sampled_from(["succeeded", "failed,pending", "running"]),
            "limit": st.integers(1, 100),
        },
    )
    return params.map(lambda p: {"params": p})


def purge_query(world: World, values: dict[str, str]) -> st.SearchStrategy[dict[str, Any]]:
    return st.sampled_from([{}, {"params": {"purge": "true"}}, {"params": {"purge": "false"}}])


def adopt_body(world: World, values: dict[str, str]) -> st.SearchStrategy[dict[str, Any]]:
    # The candidate in the body is another user's or none at all (or, if the run in the path
    # is not the caller's anyway, possibly the caller's own).
    choices = [foreign(world.victim.generations), missing_uuids]
    if values["run_id"] not in world.attacker.runs:
        choices.append(st.sampled_from(world.attacker.generations))
    return st.one_of(choices).map(lambda g: {"json": {"generation_id": g}})


REQUESTS: dict[tuple[str, str], BodyStrategy] = {
    ("POST", "/api/flows/{slug}/runs"): run_create,
    ("POST", "/api/runs/{run_id}/steps/{step_id}/adopt"): adopt_body,
    ("POST", "/api/runs/{run_id}/steps/{step_id}/generate"): generate_request,
    ("GET", "/api/runs/{run_id}/steps/{step_id}/assets"): candidate_query,
    ("POST", "/api/runs/{run_id}/steps/{step_id}/assets"): upload_request,
    ("DELETE", "/api/history/{generation_id}"): purge_query,
}
# The body names a candidate: the caller's own run and a real step are then fair game.
BODY_CARRIES_FOREIGN_ID = {("POST", "/api/runs/{run_id}/steps/{step_id}/adopt")}


@st.composite
def attempts(draw: st.DrawFn, world: World, operation: Operation) -> Attempt:
    victim, attacker = world.victim, world.attacker
    values: dict[str, str] = {}
    malformed = False
    run_owner = None
    if "run_id" in operation.path_params:
        owners = ["foreign", "missing", "malformed"]
        if "step_id" in operation.path_params:
            owners.append("own")  # with a step the run lacks, or another user's candidate
        run_owner = draw(st.sampled_from(owners))
        values["run_id"] = draw(
            {
                "foreign": foreign(victim.runs + victim.deleted_runs),
                "missing": missing_uuids,
                "malformed": malformed_uuids,
                "own": st.sampled_from(attacker.runs),
            }[run_owner]
        )
        malformed = run_owner == "malformed"
    for name in operation.path_params:
        kind = ID_KINDS[name]
        if kind == "run":
            continue
        if kind == "step":
            key = (operation.method, operation.path)
            if run_owner == "own" and key not in BODY_CARRIES_FOREIGN_ID:
                values[name] = draw(missing_steps)  # the caller's run: only a step it lacks
            else:
                values[name] = draw(st.one_of(st.sampled_from(STEP_NAMES), missing_steps))
        elif kind == "flow":
            values[name] = draw(missing_slugs)  # flows are shared: only "does not exist" applies
        else:
            owned = victim.generations if kind == "generation" else [victim.token_id]
            choice = draw(st.sampled_from(["foreign", "missing", "malformed"]))
            values[name] = draw(
                {"foreign": foreign(owned), "missing": missing_uuids, "malformed": malformed_uuids}[
                    choice
                ]
            )
            malformed = malformed or choice == "malformed"
    request = REQUESTS.get((operation.method, operation.path), no_body)
    kwargs = draw(request(world, values))
    via = draw(st.sampled_from(["cookie", "bearer"]))
    expected = (422, "validation_error") if malformed else (404, "not_found")
    return Attempt(operation.method, operation.url(values), kwargs, expected, via)


# -- the walk --------------------------------------------------------------------------------


def walked_operations(app: Any) -> list[Operation]:
    return [op for op in operations(app) if op.path_params]


def test_the_walk_knows_every_operation(tmp_path) -> None:
    """A new path parameter, or a new operation with a request body, needs a line here."""
    app = create_app(Settings(_env_file=None, data_dir=tmp_path, secret_key="k" * 40))
    schema = app.openapi()
    walked = walked_operations(app)
    assert len(walked) >= 17
    for operation in walked:
        unknown = set(operation.path_params) - set(ID_KINDS)
        assert not unknown, f"{operation.label}: teach the walk the path parameter(s) {unknown}"
        has_body = "requestBody" in schema["paths"][operation.path][operation.method.lower()]
        if has_body:
            assert (operation.method, operation.path) in REQUESTS, (
                f"{operation.label} takes a body: add a request strategy to REQUESTS"
            )
    assert set(REQUESTS) <= {(op.method, op.path) for op in walked}


async def send(world: World, attempt: Attempt) -> httpx.Response:
    account = world.attacker
    client = account.session if attempt.via == "cookie" else account.bearer
    request = client.request(attempt.method, attempt.url, **attempt.kwargs)
    return await asyncio.wait_for(request, 30)


async def test_foreign_and_missing_ids_are_not_found_and_change_nothing(world: World) -> None:
    app = world.app
    victim_before = await snapshot(app, world.victim.user_id)
    attacker_before = await snapshot(app, world.attacker.user_id)
    walked = walked_operations(app)
    counts: dict[str, int] = {}

    async def check(attempt: Attempt) -> None:
        response = await send(world, attempt)
        status, code = attempt.expected
        assert_problem(response, status, code)
        for account, before in ((world.victim, victim_before), (world.attacker, attacker_before)):
            after = await snapshot(app, account.user_id)
            assert after == before, describe_change(before, after)

    def walk(operation: Operation) -> None:
        @WALK_SETTINGS
        @given(attempt=attempts(world, operation))
        def example(attempt: Attempt) -> None:
            note(f"{operation.method} {attempt.url} via {attempt.via} {attempt.kwargs!r}")
            counts[operation.label] = counts.get(operation.label, 0) + 1
            call_soon(world.loop, check(attempt))

        example()

    for operation in walked:
        await asyncio.to_thread(walk, operation)
    print(
        f"\nauthorization walk: {len(walked)} operations with path ids, "
        f"{sum(counts.values())} examples"
    )
    assert set(counts) == {op.label for op in walked}


async def test_batch_delete_reports_foreign_ids_as_not_found(world: World) -> None:
    app, victim, attacker = world.app, world.victim, world.attacker
    victim_before = await snapshot(app, victim.user_id)
    attacker_before = await snapshot(app, attacker.user_id)
    count = 0

    async def check(ids: list[str], purge: bool, via: str) -> None:
        client = attacker.session if via == "cookie" else attacker.bearer
        response = await client.request(
            "POST", "/api/history/delete", json={"ids": ids, "purge": purge}
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["deleted"] == []
        assert sorted(body["not_found"]) == sorted(str(uuid.UUID(i)) for i in ids)
        assert await snapshot(app, victim.user_id) == victim_before
        assert await snapshot(app, attacker.user_id) == attacker_before

    @WALK_SETTINGS
    @given(
        ids=st.lists(
            st.one_of(st.sampled_from(victim.generations), missing_uuids),
            min_size=1,
            max_size=8,
            unique_by=lambda i: uuid.UUID(i),
        ),
        purge=st.booleans(),
        via=st.sampled_from(["cookie", "bearer"]),
    )
    def example(ids: list[str], purge: bool, via: str) -> None:
        nonlocal count
        count += 1
        call_soon(world.loop, check(ids, purge, via))

    await asyncio.to_thread(example)
    assert count > 0

    # With one of the caller's own ids among them, that one (and only that one) goes.
    own = attacker.generations[2]  # the failed candidate: deleting it touches no adoption
    response = await attacker.bearer.post(
        "/api/history/delete", json={"ids": [own, *victim.generations]}
    )
    assert response.status_code == 200, response.text
    assert response.json()["deleted"] == [own]
    assert sorted(response.json()["not_found"]) == sorted(victim.generations)
    assert await snapshot(app, victim.user_id) == victim_before


async def test_filters_with_another_users_run_show_nothing(world: World) -> None:
    for run_id in world.victim.runs:
        response = await world.attacker.bearer.get("/api/history", params={"run_id": run_id})
        assert response.status_code == 200, response.text
        assert response.json()["items"] == []


# -- without credentials, and without the CSRF token -----------------------------------------


def _placeholder_values(operation: Operation, account: Account | None) -> dict[str, str]:
    """Real ids of ``account`` where it has them (so only the check under test can refuse the
    request), fresh UUIDs otherwise."""
    real = {
        "run": account.runs[0] if account else str(uuid.uuid4()),
        "step": "object",
        "generation": account.generations[2] if account else str(uuid.uuid4()),
        "token": account.token_id if account else str(uuid.uuid4()),
        "flow": "quick",
    }
    return {name: real[ID_KINDS.get(name, "run")] for name in operation.path_params}


async def test_every_operation_but_the_public_ones_needs_credentials(app) -> None:
    guarded = [op for op in operations(app) if (op.method, op.path) not in PUBLIC_OPERATIONS]
    assert len(guarded) >= 25
    async with make_client(app) as anonymous:
        for operation in guarded:
            url = operation.url(_placeholder_values(operation, None))
            for headers in (
                {},
                {"Authorization": "Bearer fs_not-a-real-token"},
                {"Cookie": "flowstudio_session=not-a-real-session"},
            ):
                response = await anonymous.request(
                    operation.method,
                    url,
                    headers=headers,
                    json={} if operation.method != "GET" else None,
                )
                assert_problem(response, 401, "unauthenticated")
    print(f"\n401 sweep: {len(guarded)} operations x 3 credentials")


async def test_unsafe_cookie_requests_need_the_csrf_token(world: World) -> None:
    app, attacker, victim = world.app, world.attacker, world.victim
    unsafe = [
        op
        for op in operations(app)
        if op.method in UNSAFE_METHODS and (op.method, op.path) not in PUBLIC_OPERATIONS
    ]
    assert len(unsafe) >= 12
    before = await snapshot(app, attacker.user_id)
    http = attacker.session.http  # the bare client: it carries the cookie but adds no header
    for operation in unsafe:
        url = operation.url(_placeholder_values(operation, attacker))
        for headers in (
            {},
            {"X-CSRF-Token": "0" * 64},
            {"X-CSRF-Token": victim.session.csrf_token},
        ):
            response = await http.request(operation.method, url, headers=headers, json={})
            assert_problem(response, 403, "csrf_failed")
    assert await snapshot(app, attacker.user_id) == before
    # The same cookie with its token is let through (so the 403s above were the CSRF check).
    response = await attacker.session.post(f"/api/runs/{attacker.runs[0]}/steps/object/clear")
    assert response.status_code == 200, response.text
    print(f"\nCSRF sweep: {len(unsafe)} unsafe operations x 3 wrong tokens")
