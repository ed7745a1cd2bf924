"""A process remembers whom a session or token belongs to for a few seconds, never longer, and
forgets at once what it revokes itself."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from sqlalchemy import inspect as sa_inspect
from sqlalchemy import update

from flowstudio.auth import service as auth_service
from flowstudio.auth.models import ApiToken, UserSession
from flowstudio.auth.service import Principal, PrincipalCache
from flowstudio.db import utcnow
from flowstudio.ids import uuid7
from tests.fixtures.app import make_client


async def _revoke_behind_the_cache(app) -> None:
    """What another process revoking the token looks like to this one."""
    async with app.state.ctx.sessions() as db:
        await db.execute(update(ApiToken).values(revoked_at=utcnow()))
        await db.commit()


async def _token(alice) -> dict[str, str]:
    created = await alice.post("/api/auth/tokens", json={"name": "script"})
    return {"Authorization": f"Bearer {created.json()['token']}"}


async def test_a_remembered_token_is_trusted_for_seconds_only(app, alice, monkeypatch):
    headers = await _token(alice)
    async with make_client(app) as script:
        assert (await script.get("/api/auth/me", headers=headers)).status_code == 200
        await _revoke_behind_the_cache(app)
        # Still remembered: no lookup for this request.
        assert (await script.get("/api/auth/me", headers=headers)).status_code == 200
        later = time.monotonic() + app.state.ctx.settings.principal_cache_seconds + 0.1
        monkeypatch.setattr(auth_service.time, "monotonic", lambda: later)
        assert (await script.get("/api/auth/me", headers=headers)).status_code == 401


@pytest.mark.parametrize("settings_overrides", [{"principal_cache_seconds": 0}])
async def test_without_the_cache_every_request_looks_up(app, alice):
    headers = await _token(alice)
    async with make_client(app) as script:
        assert (await script.get("/api/auth/me", headers=headers)).status_code == 200
        await _revoke_behind_the_cache(app)
        assert (await script.get("/api/auth/me", headers=headers)).status_code == 401


async def test_a_remembered_session_still_expires(app, alice, monkeypatch):
    assert (await alice.get("/api/auth/me")).status_code == 200
    async with app.state.ctx.sessions() as db:
        expiry = utcnow() + timedelta(seconds=2)
        await db.execute(update(UserSession).values(expires_at=expiry))
        await db.commit()
    app.state.ctx.auth.principals.clear()
    assert (await alice.get("/api/auth/me")).status_code == 200  # remembered, with its expiry
    monkeypatch.setattr(auth_service, "utcnow", lambda: expiry + timedelta(seconds=1))
    assert (await alice.get("/api/auth/me")).status_code == 401


async def test_signing_out_forgets_at_once(app, alice):
    cookie = alice.http.cookies["flowstudio_session"]
    assert (await alice.get("/api/auth/me")).status_code == 200
    assert (await alice.post("/api/auth/logout")).status_code == 204
    async with make_client(app) as stale:
        stale.cookies.set("flowstudio_session", cookie)
        assert (await stale.get("/api/auth/me")).status_code == 401


def _principal() -> Principal:
    return Principal(user=auth_service.User(id=uuid7(), email="a@example.com"), touch_due=True)


def test_nothing_is_remembered_just_after_a_revocation(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(auth_service.time, "monotonic", lambda: now[0])
    cache = PrincipalCache(seconds=10)
    principal = _principal()
    cache.put("token:a", principal)
    remembered = cache.get("token:a")
    assert remembered is not None and remembered.touch_due is False
    cache.forget_user(principal.user.id)
    assert cache.get("token:a") is None
    # A lookup racing the revocation's commit may read the old row: it is not remembered.
    cache.put("token:a", principal)
    assert cache.get("token:a") is None
    now[0] += 10.5
    cache.put("token:a", principal)
    assert cache.get("token:a") is not None


def test_the_cache_stays_bounded():
    cache = PrincipalCache(seconds=10, max_entries=50)
    for i in range(500):
        cache.put(f"token:{i}", _principal())
    assert len(cache._entries) <= 50
    assert cache.get("token:499") is not None


async def test_the_remembered_user_belongs_to_no_session(app, alice):
    """The request that looked the user up may roll back (errors do), which expires the
    instances its session loaded; a later request reading that instance from the cache would
    fail. What the cache keeps is a copy that no session owns."""
    app.state.ctx.auth.principals.clear()
    me = await alice.get("/api/auth/me")
    assert me.status_code == 200
    [(principal, _, _)] = app.state.ctx.auth.principals._entries.values()
    state = sa_inspect(principal.user)
    assert state.transient and principal.user.email == "alice@example.com"


async def test_a_remembered_caller_costs_a_list_page_no_session(app, alice, monkeypatch):
    """A list page with a remembered principal opens no ORM session at all: the page is one
    read unit (db.Reads), and whom the request is from comes from the cache."""
    ctx = app.state.ctx
    headers = await _token(alice)
    opened: list[str] = []

    def counting(name, factory):  # noqa: ANN001, ANN202
        def open_session(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            opened.append(name)
            return factory(*args, **kwargs)

        return open_session

    async with make_client(app) as script:
        # The first request looks the token up and records its use.
        assert (await script.get("/api/history", headers=headers)).status_code == 200
        monkeypatch.setattr(ctx, "sessions", counting("write", ctx.sessions))
        monkeypatch.setattr(ctx, "read_sessions", counting("read", ctx.read_sessions))
        for _ in range(3):
            assert (await script.get("/api/history", headers=headers)).status_code == 200
        assert opened == []
        # Without the cache the lookup is a read session of its own, and nothing else.
        ctx.auth.principals.clear()
        assert (await script.get("/api/history", headers=headers)).status_code == 200
        assert opened == ["read"]
