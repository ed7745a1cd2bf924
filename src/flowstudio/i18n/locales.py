"""The languages of the pages: which one a request gets, its catalogue, and locale formatting.

English is the source language (the msgids). The Chinese catalogues are gettext `.po` files,
one per locale (`catalogues/zh_TW.po`, `catalogues/zh_CN.po`), read with Babel when first used;
`python -m flowstudio.i18n.extract` (or `./scripts/i18n.sh`) collects the messages of the
templates, the ES modules and the bundled flows into them. Templates translate through Jinja2's
i18n extension, the ES modules through the part of the catalogue that the page embeds
(`js_catalogue`).

A request's language: the `flowstudio_lang` cookie (set when the user picks one in the page
header, and at sign-in from the language stored with the account), else the best match of
`Accept-Language`, else English.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from babel.dates import format_datetime
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_decimal
from babel.support import Translations

CATALOGUES = Path(__file__).parent / "catalogues"
DEFAULT = "en"
COOKIE = "flowstudio_lang"


@dataclass(frozen=True)
class Language:
    tag: str  # BCP 47, as in <html lang>
    babel: str  # Babel's locale identifier
    name: str  # in the language itself


LANGUAGES = {
    "en": Language("en", "en", "English"),
    "zh-TW": Language("zh-TW", "zh_Hant_TW", "繁體中文"),
    "zh-CN": Language("zh-CN", "zh_Hans_CN", "简体中文"),
}
TRANSLATED = ("zh-TW", "zh-CN")

_current = contextvars.ContextVar("flowstudio_locale", default=DEFAULT)


def supported(tag: str | None) -> str | None:
    """The supported language a tag asks for: zh-Hant, zh-TW, zh-HK and zh-MO are Traditional
    (Taiwan); zh, zh-Hans, zh-CN and zh-SG Simplified; any en-* English; else None."""
    if not tag:
        return None
    parts = [p.lower() for p in tag.strip().replace("_", "-").split("-") if p]
    if not parts:
        return None
    if parts[0] == "en":
        return "en"
    if parts[0] != "zh":
        return None
    rest = set(parts[1:])
    if rest & {"hant", "tw", "hk", "mo"}:
        return "zh-TW"
    return "zh-CN"


def negotiate(accept_language: str | None) -> str | None:
    """The best supported language of an Accept-Language header (by q, then order), or None."""
    if not accept_language:
        return None
    choices: list[tuple[float, int, str]] = []
    for index, item in enumerate(accept_language.split(",")[:32]):
        tag, _, params = item.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        language = supported(tag)
        if language and quality > 0:
            choices.append((-quality, index, language))
    return min(choices)[2] if choices else None


def request_language(cookie: str | None, accept_language: str | None) -> str:
    return supported(cookie) or negotiate(accept_language) or DEFAULT


def of_request(request: Any, stored: str | None = None) -> str:
    """A request's language: its cookie, else the account's (`stored`), else Accept-Language."""
    return request_language(
        request.cookies.get(COOKIE) or stored, request.headers.get("accept-language")
    )


@contextlib.contextmanager
def using(tag: str) -> Iterator[None]:
    """Translate and format in `tag` inside the block (pages render in one)."""
    token = _current.set(tag if tag in LANGUAGES else DEFAULT)
    try:
        yield
    finally:
        _current.reset(token)


def current() -> str:
    return _current.get()


@functools.cache
def catalogue(tag: str) -> Any:
    """The Babel catalogue of a translated language (parsed from its .po file)."""
    with open(CATALOGUES / f"{tag.replace('-', '_')}.po", "rb") as handle:
        return read_po(handle, locale=LANGUAGES[tag].babel)


@functools.cache
def _translations(tag: str) -> Translations | None:
    if tag not in TRANSLATED:
        return None
    buffer = io.BytesIO()
    write_mo(buffer, catalogue(tag))
    buffer.seek(0)
    return Translations(fp=buffer)


def gettext(message: str) -> str:
    """`message` in the current language (templates format it: Jinja2's newstyle gettext)."""
    translations = _translations(current())
    return translations.gettext(message) if translations else message


def ngettext(singular: str, plural: str, n: int) -> str:
    translations = _translations(current())
    if translations:
        return translations.ngettext(singular, plural, n)
    return singular if n == 1 else plural


@functools.cache
def js_catalogue(tag: str) -> dict[str, str | list[str]]:
    """The messages the ES modules use, msgid -> translation (a list of plural forms for a
    plural message): those found in a .js file, and the bundled flows' texts, which the modules
    show from API answers (`t(item.step_title)`). Empty for English."""
    if tag not in TRANSLATED:
        return {}
    found: dict[str, str | list[str]] = {}
    for message in catalogue(tag):
        if not message.id or not any(
            path.endswith((".js", ".toml")) for path, _ in message.locations
        ):
            continue
        if isinstance(message.id, tuple):
            found[message.id[0]] = list(message.string)
        else:
            found[message.id] = message.string
    return found


def format_time(value: datetime | str, style: str = "medium") -> str:
    """A date and time in the current language (Babel), in the server's UTC."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return format_datetime(value, style, locale=LANGUAGES[current()].babel)


def format_number(value: float) -> str:
    return format_decimal(value, locale=LANGUAGES[current()].babel)
