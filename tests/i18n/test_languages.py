"""Which language a request gets (flowstudio.i18n.locales)."""

from __future__ import annotations

import pytest

from flowstudio.i18n import locales


@pytest.mark.parametrize(
    ("tag", "language"),
    [
        ("zh-TW", "zh-TW"),
        ("zh-Hant", "zh-TW"),
        ("zh-HK", "zh-TW"),
        ("zh-Hant-HK", "zh-TW"),
        ("zh_TW", "zh-TW"),
        ("zh-MO", "zh-TW"),
        ("zh", "zh-CN"),
        ("zh-CN", "zh-CN"),
        ("zh-Hans", "zh-CN"),
        ("zh-SG", "zh-CN"),
        ("zh-Hans-SG", "zh-CN"),
        ("en", "en"),
        ("en-GB", "en"),
        ("fr", None),
        ("", None),
        (None, None),
        ("-", None),
    ],
)
def test_supported(tag, language):
    assert locales.supported(tag) == language


@pytest.mark.parametrize(
    ("header", "language"),
    [
        ("zh-TW,zh;q=0.9,en;q=0.8", "zh-TW"),
        ("fr-FR,fr;q=0.9,zh-Hant;q=0.5,en;q=0.4", "zh-TW"),
        ("en-US,en;q=0.9,zh-CN;q=0.8", "en"),
        ("de;q=1, zh;q=0.7", "zh-CN"),
        ("zh-CN;q=0.2, en;q=0.9", "en"),
        ("zh-CN;q=0", None),
        ("fr, de", None),
        ("zh-TW;q=abc, zh-CN", "zh-CN"),
        ("", None),
    ],
)
def test_negotiate(header, language):
    assert locales.negotiate(header) == language


def test_the_cookie_wins_over_the_browser():
    assert locales.request_language("zh-CN", "zh-TW,en") == "zh-CN"
    assert locales.request_language("klingon", "zh-TW,en") == "zh-TW"
    assert locales.request_language(None, None) == "en"


def test_formatting_follows_the_language():
    with locales.using("zh-TW"):
        assert locales.format_number(1234567) == "1,234,567"
        assert "2026" in locales.format_time("2026-12-06T08:30:00+00:00")
        assert "12月" in locales.format_time("2026-12-06T08:30:00+00:00")
    with locales.using("en"):
        assert locales.format_time("2026-12-06T08:30:00+00:00").startswith("Dec 6, 2026")
