"""Search in Chinese, Japanese, Korean and any other script, through the API on every backend:
the same results everywhere, and exactly what `flowstudio.i18n.search` defines."""

from __future__ import annotations

import random
import unicodedata

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowstudio.i18n.search import fold, index_text, search_terms
from tests.fixtures.flows import generate, start_run

PROMPTS = [
    "一只红色的陶瓷茶壶，放在木桌上",
    "一隻紅色的陶瓷茶壺，放在木桌上",
    "白色马克杯和茶壶的产品照",
    "红茶",
    "glazed ceramic teapot on a wooden table",
    "ｇｌａｚｅｄ　ＴＥＡＰＯＴ",
    "Café au lait, naïve style",
    "ガラスのティーポット、木のテーブル",
    "유리 주전자, 나무 테이블",
    "iPhone手机壳 v2",
    "茶",
    "🫖 teapot emoji 🙂",
]


def _drawn_prompts(seed: int, count: int) -> list[str]:
    """Prompts of arbitrary Unicode: combining marks, emoji, CJK punctuation, other scripts."""
    draw = random.Random(seed)
    pool = (
        "茶壶壺陶瓷红紅色のがぎ가나다éñøßǅİı"
        "\u0301\u0308\u3099\u200d，。、「」！？ 　abcXYZ019٣߁🙂🫖\U00020000\ue000"
    )
    return ["".join(draw.choice(pool) for _ in range(draw.randint(1, 16))) for _ in range(count)]


async def _fill(app, user, prompts: list[str]) -> dict[str, str]:
    """One pending generation per prompt (the worker is stopped); id -> prompt."""
    await app.state.worker.stop()
    run = await start_run(user, "quick", prompt="seed")
    made = {}
    for prompt in prompts:
        response = await generate(user, run["id"], "image", wait=False, prompt=prompt)
        assert response.status_code == 202, response.text
        [generation] = response.json()["generations"]
        made[generation["id"]] = generation["prompt"]
    return made


async def _search(user, q: str) -> tuple[int, set[str]]:
    found: set[str] = set()
    cursor = None
    while True:
        params = {"q": q, "limit": 50, **({"cursor": cursor} if cursor else {})}
        response = await user.get("/api/history", params=params)
        if response.status_code != 200:
            return response.status_code, found
        page = response.json()
        found.update(item["id"] for item in page["items"])
        cursor = page["next_cursor"]
        if not cursor:
            return 200, found


def _expected(made: dict[str, str], q: str) -> set[str]:
    terms = search_terms(q)
    return {
        gid
        for gid, prompt in made.items()
        if all(term.matches(index_text(prompt)) for term in terms)
    }


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        ("茶壶", [0, 1, 2]),
        ("茶壺", [0, 1, 2]),
        ("红色", [0, 1]),
        ("陶瓷茶壶", [0, 1]),
        ("陶瓷茶壶 木桌", [0, 1]),
        ("茶", [0, 1, 2, 3, 10]),  # one CJK character: every prompt that holds it
        ("壶茶", []),
        ("茶杯", []),
        ("ｇｌａｚｅｄ", [4, 5]),
        ("TEAPOT", [4, 5, 11]),
        ("cafe naive", [6]),
        ("ティーポット", [7]),
        ("ﾃｨｰﾎﾟｯﾄ", [7]),
        ("주전자", [8]),
        ("手机壳", [9]),
        ("iphone 手机", [9]),
        ("茶壶 teapot", []),
    ],
)
async def test_search_across_scripts(app, alice, bob, q, expected):
    made = await _fill(app, alice, PROMPTS)
    await _fill(app, bob, PROMPTS[:2])  # another user's matches are never found
    ids = list(made)
    status, found = await _search(alice, q)
    assert status == 200
    assert found == {ids[i] for i in expected}, [made[g] for g in found]
    assert found == _expected(made, q)


async def test_a_search_with_nothing_to_look_for_is_a_422(alice):
    response = await alice.get("/api/history", params={"q": "，。🙂"})
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"


QUERY = st.text(
    alphabet=st.one_of(
        st.sampled_from("".join(PROMPTS) + "".join(_drawn_prompts(1, 10))),
        st.characters(codec="utf-8"),
    ),
    min_size=1,
    max_size=12,
)


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(q=QUERY)
async def test_any_search_answers_exactly_the_prompts_holding_its_terms(app, alice, q):
    """Arbitrary Unicode (emoji, combining marks, lone CJK punctuation, any script): never a
    5xx, and the answer is exactly the prompts whose folded tokens hold every folded term."""
    made = app.state.__dict__.setdefault("search_corpus", {})
    if not made:
        made.update(await _fill(app, alice, PROMPTS + _drawn_prompts(1, 24)))
    status, found = await _search(alice, q)
    if "\x00" in q:  # refused in any text field, with its own message
        assert status == 422
        return
    if not q.strip():  # an empty search box lists everything
        assert status == 200, repr(q)
        return
    if not search_terms(q):
        assert status == 422
        return
    assert status == 200
    for gid in found:
        prompt = made[gid]
        assert all(term.text in fold(prompt) for term in search_terms(q)), (q, prompt)
    assert found == _expected(made, q), (q, unicodedata.normalize("NFKC", q))
