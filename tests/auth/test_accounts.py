"""Accounts over HTTP: registration, sessions, CSRF, API tokens and login throttling."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from flowstudio.auth.models import ApiToken, UserSession
from flowstudio.auth.security import token_hash
from flowstudio.db import utcnow
from tests.fixtures.app import make_client, sign_up
from tests.fixtures.flows import png_bytes

PASSWORD = "correct horse battery"


def assert_problem(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["code"] == code
    assert body["status"] == status
    assert body["title"] and body["detail"] and body["type"]
    assert "Traceback" not in response.text
    return body


async def test_register_me_logout(app):
    async with make_client(app) as http:
        response = await http.post(
            "/api/auth/register", json={"email": " Ann@Example.com ", "password": PASSWORD}
        )
        assert response.status_code == 201
        body = response.json()
        assert body["user"]["email"] == "ann@example.com"
        assert body["csrf_token"]
        cookie = response.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=lax" in cookie

        me = await http.get("/api/auth/me")
        assert me.status_code == 200
        assert me.json()["user"]["id"] == body["user"]["id"]
        assert me.json()["csrf_token"] == body["csrf_token"]

        out = await http.post("/api/auth/logout", headers={"X-CSRF-Token": body["csrf_token"]})
        assert out.status_code == 204
        assert_problem(await http.get("/api/auth/me"), 401, "unauthenticated")


async def test_session_token_is_stored_only_as_hash(app):
    async with make_client(app) as http:
        await http.post("/api/auth/register", json={"email": "h@example.com", "password": PASSWORD})
        cookie = http.cookies["flowstudio_session"]
    async with app.state.ctx.sessions() as db:
        hashes = list(await db.scalars(select(UserSession.token_hash)))
    assert hashes == [token_hash(cookie)]
    assert cookie not in hashes


async def test_duplicate_email_is_409(app):
    await (await sign_up(app, "dup@example.com")).http.aclose()
    async with make_client(app) as http:
        response = await http.post(
            "/api/auth/register", json={"email": "DUP@example.com", "password": PASSWORD}
        )
    assert_problem(response, 409, "email_taken")


async def test_login_wrong_password_and_unknown_email(app):
    await (await sign_up(app, "w@example.com")).http.aclose()
    async with make_client(app) as http:
        wrong = await http.post(
            "/api/auth/login", json={"email": "w@example.com", "password": "nope-nope"}
        )
        assert_problem(wrong, 401, "invalid_credentials")
        unknown = await http.post(
            "/api/auth/login", json={"email": "x@example.com", "password": "nope-nope"}
        )
        body = assert_problem(unknown, 401, "invalid_credentials")
        # Same answer for unknown emails, so accounts cannot be discovered.
        assert body["detail"] == wrong.json()["detail"]
        ok = await http.post(
            "/api/auth/login", json={"email": "W@example.com", "password": PASSWORD}
        )
        assert ok.status_code == 200
        assert (await http.get("/api/auth/me")).status_code == 200


async def test_login_rotates_the_session(app):
    user = await sign_up(app, "r@example.com")
    old = user.http.cookies["flowstudio_session"]
    response = await user.http.post(
        "/api/auth/login", json={"email": "r@example.com", "password": PASSWORD}
    )
    assert response.status_code == 200
    new = user.http.cookies["flowstudio_session"]
    assert new != old
    async with make_client(app) as stale:
        stale.cookies.set("flowstudio_session", old)
        assert_problem(await stale.get("/api/auth/me"), 401, "unauthenticated")
    await user.http.aclose()


async def test_expired_session_is_refused(app):
    user = await sign_up(app, "e@example.com")
    async with app.state.ctx.sessions() as db:
        await db.execute(update(UserSession).values(expires_at=utcnow() - timedelta(seconds=1)))
        await db.commit()
    assert_problem(await user.get("/api/auth/me"), 401, "unauthenticated")
    await user.http.aclose()


async def test_csrf_required_for_cookie_sessions(alice):
    missing = await alice.http.post("/api/auth/tokens", json={"name": "ci"})
    assert_problem(missing, 403, "csrf_failed")
    wrong = await alice.http.post(
        "/api/auth/tokens", json={"name": "ci"}, headers={"X-CSRF-Token": "x" * 64}
    )
    assert_problem(wrong, 403, "csrf_failed")
    ok = await alice.post("/api/auth/tokens", json={"name": "ci"})
    assert ok.status_code == 201


async def test_api_tokens_create_use_list_revoke(app, alice):
    created = await alice.post("/api/auth/tokens", json={"name": "script"})
    assert created.status_code == 201
    token = created.json()["token"]
    async with make_client(app) as script:
        headers = {"Authorization": f"Bearer {token}"}
        me = await script.get("/api/auth/me", headers=headers)
        assert me.status_code == 200
        assert me.json()["user"]["email"] == "alice@example.com"
        assert me.json()["csrf_token"] is None
        # Bearer requests need no CSRF token.
        other = await script.post("/api/auth/tokens", json={"name": "second"}, headers=headers)
        assert other.status_code == 201

        listed = (await alice.get("/api/auth/tokens")).json()["items"]
        assert {t["name"] for t in listed} == {"script", "second"}
        assert all("token" not in t for t in listed)

        async with app.state.ctx.sessions() as db:
            stored = list(await db.scalars(select(ApiToken.token_hash)))
        assert token_hash(token) in stored and token not in stored

        revoke = await alice.delete(f"/api/auth/tokens/{created.json()['id']}")
        assert revoke.status_code == 204
        assert_problem(await script.get("/api/auth/me", headers=headers), 401, "unauthenticated")
        assert_problem(
            await alice.delete(f"/api/auth/tokens/{created.json()['id']}"), 404, "not_found"
        )


async def test_other_users_token_cannot_be_revoked(alice, bob):
    created = await alice.post("/api/auth/tokens", json={"name": "mine"})
    response = await bob.delete(f"/api/auth/tokens/{created.json()['id']}")
    assert_problem(response, 404, "not_found")


@pytest.mark.parametrize("settings_overrides", [{"login_attempts_per_minute": 3}])
async def test_login_rate_limit(app):
    await (await sign_up(app, "rl@example.com")).http.aclose()
    async with make_client(app) as http:
        for _ in range(3):
            r = await http.post(
                "/api/auth/login", json={"email": "rl@example.com", "password": "bad-pass"}
            )
            assert r.status_code == 401
        limited = await http.post(
            "/api/auth/login", json={"email": "rl@example.com", "password": PASSWORD}
        )
        assert_problem(limited, 429, "rate_limited")
        assert int(limited.headers["retry-after"]) >= 1


@pytest.mark.parametrize("settings_overrides", [{"registration": "closed"}])
async def test_closed_registration(app):
    async with make_client(app) as http:
        r = await http.post(
            "/api/auth/register", json={"email": "c@example.com", "password": PASSWORD}
        )
    assert_problem(r, 403, "registration_closed")


async def test_validation_errors_are_problems(client):
    r = await client.post("/api/auth/register", json={"email": "not-an-email", "password": "short"})
    body = assert_problem(r, 422, "validation_error")
    assert {e["field"] for e in body["errors"]} == {"email", "password"}
    r = await client.post(
        "/api/auth/register", content=b"{broken", headers={"content-type": "application/json"}
    )
    assert_problem(r, 422, "validation_error")
    # Bytes that are not even UTF-8 (the framework says 400 "error parsing the body").
    r = await client.post(
        "/api/auth/register", content=b"\x18\xff", headers={"content-type": "application/json"}
    )
    body = assert_problem(r, 422, "validation_error")
    assert body["errors"] == [{"field": "body", "message": "could not be parsed"}]


async def test_nul_characters_are_refused_before_the_database_sees_them(app, alice):
    # PostgreSQL cannot store or compare text with U+0000 (this was a 500 there).
    token = await alice.post("/api/auth/tokens", json={"name": "ci\x00"})
    body = assert_problem(token, 422, "validation_error")
    assert body["errors"] == [{"field": "name", "message": "contains U+0000"}]
    run = await alice.post("/api/flows/quick/runs", json={"inputs": {"prompt": {"x": ["\x00"]}}})
    body = assert_problem(run, 422, "validation_error")
    assert body["errors"] == [{"field": "inputs.prompt.x.0", "message": "contains U+0000"}]
    quick = await alice.post("/api/flows/quick/runs", json={})
    # Written by hand: httpx would percent-encode the NUL in the file name.
    form = (
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="a\x00.png"\r\n'
        b"Content-Type: image/png\r\n\r\n" + png_bytes((1, 2, 3)) + b"\r\n--b--\r\n"
    )
    upload = await alice.post(
        f"/api/runs/{quick.json()['id']}/steps/image/assets",
        content=form,
        headers={"Content-Type": "multipart/form-data; boundary=b"},
    )
    body = assert_problem(upload, 422, "validation_error")
    assert body["errors"] == [{"field": "file", "message": "contains U+0000"}]
    async with make_client(app) as http:
        login = await http.post(
            "/api/auth/login", json={"email": "alice@example.com\x00", "password": PASSWORD}
        )
        assert_problem(login, 422, "validation_error")
    assert (await alice.get("/api/auth/tokens")).json()["items"] == []


async def test_unknown_api_route_and_unauthenticated(client):
    assert_problem(await client.get("/api/nope"), 404, "not_found")
    assert_problem(await client.get("/api/auth/tokens"), 401, "unauthenticated")
    bad = await client.get("/api/auth/me", headers={"Authorization": "Bearer fs_bogus"})
    assert_problem(bad, 401, "unauthenticated")


async def test_wrong_method_on_a_known_address_is_405(client, alice):
    """Not 404: the address exists. Allow names what it takes; no credentials are needed to learn
    that, and no resource is looked up."""
    wrong = await client.put("/api/history")
    body = assert_problem(wrong, 405, "method_not_allowed")
    assert wrong.headers["allow"] == "GET, HEAD"
    assert "GET" in body["detail"]
    runs = await client.patch("/api/runs/01a2025b-57b2-7156-867b-a27a02ce697c")
    assert_problem(runs, 405, "method_not_allowed")
    assert runs.headers["allow"] == "DELETE, GET, HEAD"
    assert_problem(await client.put("/api/nope/deeper"), 404, "not_found")


async def test_health(client):
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200, ready.text


async def _age_last_use(app) -> None:
    long_ago = utcnow() - timedelta(hours=1)
    async with app.state.ctx.sessions() as db:
        await db.execute(update(UserSession).values(last_seen_at=long_ago))
        await db.execute(update(ApiToken).values(last_used_at=long_ago))
        await db.commit()
    app.state.ctx.auth.principals.clear()  # as if the cache's few seconds had passed


async def _last_use(app) -> tuple:
    async with app.state.ctx.sessions() as db:
        seen = await db.scalar(select(UserSession.last_seen_at))
        used = await db.scalar(select(ApiToken.last_used_at).where(ApiToken.name == "script"))
    return seen, used


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_last_use_is_recorded_by_reads_and_writes(app, alice, method):
    """GET requests run read-only, so their bookkeeping write takes a transaction of its own;
    unsafe requests write it in theirs (on SQLite that one already holds the write lock)."""
    created = await alice.post("/api/auth/tokens", json={"name": "script"})
    headers = {"Authorization": f"Bearer {created.json()['token']}"}
    await _age_last_use(app)
    before = utcnow() - timedelta(minutes=1)
    async with make_client(app) as script:
        if method == "GET":
            assert (await alice.get("/api/auth/me")).status_code == 200
            assert (await script.get("/api/history", headers=headers)).status_code == 200
        else:
            assert (await alice.post("/api/auth/tokens", json={"name": "b"})).status_code == 201
            made = await script.post("/api/auth/tokens", json={"name": "c"}, headers=headers)
            assert made.status_code == 201
    seen, used = await _last_use(app)
    assert seen > before and used > before
