"""The catalogues hold a translation of every message the pages show, in both Chinese
languages, with the same placeholders as the English."""

from __future__ import annotations

import re

import pytest

from flowstudio.i18n import locales
from flowstudio.i18n.extract import extract

PLACEHOLDER = re.compile(r"%\((\w+)\)[sd]")


@pytest.fixture(scope="module")
def messages():
    return [m for m in extract() if m.id]


@pytest.mark.parametrize("tag", locales.TRANSLATED)
def test_every_message_is_translated(messages, tag):
    catalogue = locales.catalogue(tag)
    missing = []
    for message in messages:
        found = catalogue.get(message.id)
        forms = found.string if found is not None else None
        if isinstance(forms, tuple):
            forms = forms if all(forms) else None
        if not forms or found.fuzzy:
            missing.append(message.id)
    assert missing == [], f"{len(missing)} messages lack a {tag} translation: run ./scripts/i18n.sh"


@pytest.mark.parametrize("tag", locales.TRANSLATED)
def test_translations_keep_the_placeholders(messages, tag):
    catalogue = locales.catalogue(tag)
    for message in messages:
        found = catalogue.get(message.id)
        if found is None:
            continue
        ids = message.id if isinstance(message.id, tuple) else (message.id,)
        strings = found.string if isinstance(found.string, tuple) else (found.string,)
        wanted = set(PLACEHOLDER.findall(" ".join(ids))) - {"num"}
        for string in strings:
            assert set(PLACEHOLDER.findall(string)) - {"num"} == wanted, (message.id, string)


def test_messages_come_from_every_kind_of_source(messages):
    places = {path.rsplit(".", 1)[-1] for m in messages for path, _ in m.locations}
    assert {"html", "js", "py", "toml"} <= places
