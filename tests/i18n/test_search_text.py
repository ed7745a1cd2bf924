"""How prompts and searches are folded and cut into tokens (flowstudio.i18n.search)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowstudio.i18n.search import fold, index_text, search_terms


@pytest.mark.parametrize(
    ("text", "folded"),
    [
        ("一隻紅色的陶瓷茶壺", "一只红色的陶瓷茶壶"),  # Traditional to Simplified
        ("ｇｌａｚｅｄ ＴＥＡＰＯＴ", "glazed teapot"),  # width and case
        ("Café NAÏVE", "cafe naive"),  # diacritics
        ("ﾃｨｰﾎﾟｯﾄ", "ティーポット"),  # half-width kana, voicing kept
        ("がぎぐ", "がぎぐ"),
        ("Straße", "strasse"),
        ("乾隆", "干隆"),  # a character at a time: the phrase tables never apply
    ],
)
def test_fold(text, folded):
    assert fold(text) == folded


def test_a_cjk_run_is_indexed_as_bigrams_and_its_last_character():
    assert index_text("一只红色的陶瓷茶壶，放在木桌上") == (
        "一只 只红 红色 色的 的陶 陶瓷 瓷茶 茶壶 壶 放在 在木 木桌 桌上 上"
    )
    assert index_text("iPhone手机壳 v2") == "iphone 手机 机壳 壳 v2"
    assert index_text("茶") == "茶"
    assert index_text("유리 주전자") == "유리 리 주전 전자 자"


def test_search_terms():
    [run, word, single] = search_terms("陶瓷茶壺 Glazed 茶")
    assert (run.tokens, run.prefix) == (("陶瓷", "瓷茶", "茶壶"), False)
    assert (word.tokens, word.prefix) == (("glazed",), True)
    assert (single.tokens, single.prefix) == (("茶",), True)
    assert search_terms("，。！🙂") == []
    assert [t.text for t in search_terms("a a A")] == ["a"]  # once each


@pytest.mark.parametrize(
    ("q", "found"),
    [
        ("茶壶", True),
        ("茶壺", True),
        ("红色", True),
        ("陶瓷茶壶", True),
        ("一只红色的陶瓷茶壶", True),
        ("茶", True),  # one character: anywhere
        ("壶", True),  # ... the last of its run too
        ("壶茶", False),  # the characters, not in that order
        ("茶杯", False),
        ("陶瓷 木桌", True),  # every term, anywhere
        ("陶瓷 铁桌", False),
        ("ｇｌａｚｅｄ", True),
        ("glaz", True),  # a word is a prefix
        ("lazed", False),  # ... not an infix
    ],
)
def test_what_a_search_finds(q, found):
    indexed = index_text("一只红色的陶瓷茶壶，放在木桌上, glazed")
    assert all(term.matches(indexed) for term in search_terms(q)) is found


CJK_TEXT = st.text(st.sampled_from("一只红色的陶瓷茶壶壺隻紅放在木桌上，。 ab"), max_size=30)


@given(prompt=CJK_TEXT, start=st.integers(0, 30), width=st.integers(2, 8))
def test_every_cjk_substring_of_two_or_more_finds_its_prompt(prompt, start, width):
    piece = prompt[start : start + width]
    terms = search_terms(piece)
    if not terms:
        return
    indexed = index_text(prompt)
    assert all(term.matches(indexed) for term in terms), (piece, indexed)


@given(st.text(max_size=40), st.text(max_size=12))
def test_a_match_means_the_folded_prompt_holds_the_folded_terms(prompt, q):
    indexed = index_text(prompt)
    for term in search_terms(q):
        if term.matches(indexed):
            assert term.text in fold(prompt)
