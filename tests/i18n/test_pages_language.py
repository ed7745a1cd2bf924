"""The pages' language: from the browser, the header's picker (a cookie), the account."""

from __future__ import annotations

import json
import re

from tests.fixtures.app import make_client


def _html_lang(html: str) -> str:
    return re.search(r'<html lang="([^"]+)"', html).group(1)


def _catalogue(html: str) -> dict:
    found = re.search(r'<script type="application/json" id="i18n-catalogue">(.*?)</script>', html)
    return json.loads(found.group(1)) if found else {}


async def test_the_browser_language_chooses_the_page_language(client):
    for header, lang in [
        ("zh-TW,zh;q=0.9", "zh-TW"),
        ("zh-HK", "zh-TW"),
        ("zh-Hans-SG", "zh-CN"),
        ("zh", "zh-CN"),
        ("fr-FR,en;q=0.5", "en"),
        ("", "en"),
    ]:
        response = await client.get("/login", headers={"Accept-Language": header})
        assert response.status_code == 200
        assert _html_lang(response.text) == lang, header
        assert response.headers["content-language"] == lang
        assert "Accept-Language" in response.headers["vary"]


async def test_chinese_pages_embed_their_catalogue_and_read_in_chinese(client):
    english = await client.get("/login", headers={"Accept-Language": "en"})
    assert _catalogue(english.text) == {}
    for lang, words in [("zh-TW", "登入"), ("zh-CN", "登录")]:
        page = await client.get("/login", headers={"Accept-Language": lang})
        catalogue = _catalogue(page.text)
        assert catalogue, lang
        assert all(isinstance(v, str | list) for v in catalogue.values())
        assert words in page.text
        assert "Sign in to FlowStudio" not in page.text


async def test_the_cookie_overrides_the_browser(client):
    client.cookies.set("flowstudio_lang", "zh-CN")
    response = await client.get("/login", headers={"Accept-Language": "zh-TW"})
    assert _html_lang(response.text) == "zh-CN"


async def test_the_account_remembers_the_language(app, alice):
    response = await alice.request("PUT", "/api/auth/me/language", json={"language": "zh-TW"})
    assert response.status_code == 200, response.text
    assert response.json()["language"] == "zh-TW"
    assert response.cookies.get("flowstudio_lang") == "zh-TW"
    me = await alice.get("/api/auth/me")
    assert me.json()["user"]["language"] == "zh-TW"
    # Another device: signing in brings the language along.
    async with make_client(app) as other:
        login = await other.post(
            "/api/auth/login",
            json={"email": "alice@example.com", "password": "correct horse battery"},
        )
        assert login.status_code == 200
        assert login.cookies.get("flowstudio_lang") == "zh-TW"
        page = await other.get("/", headers={"Accept-Language": "en"})
        assert _html_lang(page.text) == "zh-TW"


async def test_a_language_we_do_not_have_is_a_422(alice):
    for body in [{"language": "fr"}, {"language": ""}, {}, {"language": 7}]:
        response = await alice.request("PUT", "/api/auth/me/language", json=body)
        assert response.status_code == 422, body
        assert response.json()["code"] == "validation_error"


async def test_an_account_made_in_chinese_keeps_chinese(app):
    async with make_client(app) as http:
        http.cookies.set("flowstudio_lang", "zh-CN")
        response = await http.post(
            "/api/auth/register",
            json={"email": "li@example.com", "password": "correct horse battery"},
        )
        assert response.status_code == 201
        assert response.json()["user"]["language"] == "zh-CN"


async def test_another_users_language_is_their_own(alice, bob):
    await alice.request("PUT", "/api/auth/me/language", json={"language": "zh-CN"})
    assert (await bob.get("/api/auth/me")).json()["user"]["language"] is None


async def test_a_run_made_without_a_title_is_named_in_the_pages_language(alice):
    body = {"inputs": {"prompt": "茶壶"}}
    chinese = await alice.post(
        "/api/flows/quick/runs", json=body, headers={"Accept-Language": "zh-CN"}
    )
    assert chinese.status_code == 201, chinese.text
    assert chinese.json()["title"] == "快速出图：茶壶"
    english = await alice.post("/api/flows/quick/runs", json=body)
    assert english.json()["title"] == "Quick image: 茶壶"
    given = await alice.post(
        "/api/flows/quick/runs",
        json={**body, "title": "My title"},
        headers={"Accept-Language": "zh-TW"},
    )
    assert given.json()["title"] == "My title"
