"""Collect the messages people read into the catalogues.

    uv run python -m flowstudio.i18n.extract          # or ./scripts/i18n.sh

Reads the page templates (Jinja2's `_`, `gettext`, `ngettext`, `{% trans %}`), the ES modules
(`t("…")`, `tn("…", "…", n)`), `web/__init__.py` (`N_("…")` marks a message translated
later) and the bundled flows (titles, descriptions, step titles, input labels, placeholders and
help); writes `catalogues/messages.pot` and merges it into each locale's `.po`: new messages
arrive untranslated, gone ones are dropped. `tests/i18n` fails while any message lacks a
translation.
"""

from __future__ import annotations

import io
import tomllib
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po, write_po

from flowstudio.i18n.locales import CATALOGUES, LANGUAGES, TRANSLATED

PACKAGE = Path(__file__).resolve().parents[1]
ROOT = PACKAGE.parents[1]

_METHODS = [
    ("web/templates/**.html", "jinja2.ext:babel_extract"),  # named: no entry point needed
    ("web/static/**.js", "javascript"),
    ("web/__init__.py", "python"),  # where N_() marks messages
]
_KEYWORDS = {
    "_": None,
    "gettext": None,
    "ngettext": (1, 2),
    "t": None,
    "tn": (1, 2),
    "N_": None,
}
_OPTIONS = {"web/templates/**.html": {"extensions": "jinja2.ext.i18n", "newstyle_gettext": "true"}}
_FLOW_TEXTS = ("title", "description", "label", "placeholder", "help")


def _flow_messages(path: Path) -> list[str]:
    """The texts of a flow file a person reads, in file order."""
    found: list[str] = []

    def walk(value: object) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if key in _FLOW_TEXTS and isinstance(item, str) and item.strip():
                    found.append(item)
                else:
                    walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(tomllib.loads(path.read_text(encoding="utf-8")))
    return found


def extract() -> Catalog:
    """Every message of the sources, with where it stands."""
    catalog = Catalog(project="FlowStudio", fuzzy=False)
    for filename, lineno, message, comments, context in extract_from_dir(
        PACKAGE, _METHODS, options_map=_OPTIONS, keywords=_KEYWORDS, strip_comment_tags=True
    ):
        location = (f"src/flowstudio/{filename}", lineno)
        catalog.add(message, None, [location], auto_comments=comments, context=context)
    for path in sorted((PACKAGE / "flows" / "bundled").glob("*.toml")):
        for message in _flow_messages(path):
            catalog.add(message, None, [(str(path.relative_to(ROOT)), 0)])
    return catalog


def _write(catalog: Catalog, path: Path) -> None:
    buffer = io.BytesIO()
    write_po(buffer, catalog, width=100, sort_output=False, omit_header=False)
    path.write_bytes(buffer.getvalue())


def update() -> dict[str, int]:
    """Write the template and merge it into every locale; how many messages each lacks."""
    template = extract()
    template.header_comment = "# The messages of FlowStudio's pages (English, the source)."
    template.fuzzy = False
    _write(template, CATALOGUES / "messages.pot")
    missing = {}
    for tag in TRANSLATED:
        path = CATALOGUES / f"{tag.replace('-', '_')}.po"
        if path.exists():
            with path.open("rb") as handle:
                catalog = read_po(handle, locale=LANGUAGES[tag].babel)
        else:
            catalog = Catalog(locale=LANGUAGES[tag].babel, project="FlowStudio")
        catalog.update(template, no_fuzzy_matching=True)
        catalog.obsolete.clear()
        catalog.fuzzy = False  # the header is not a guess: gettext must read its plural forms
        catalog.header_comment = (
            f"# {LANGUAGES[tag].name} ({tag}): the messages of FlowStudio's pages.\n"
            "# Written for people who read it, not word by word; see docs/i18n.md."
        )
        catalog.last_translator = "FlowStudio"
        catalog.language_team = f"FlowStudio {tag}"
        catalog.msgid_bugs_address = ""
        catalog.copyright_holder = "FlowStudio"
        _write(catalog, path)
        missing[tag] = sum(
            1
            for m in catalog
            if m.id and not (all(m.string) if isinstance(m.string, tuple) else m.string)
        )
    return missing


if __name__ == "__main__":
    for tag, count in update().items():
        print(f"{tag}: {count} messages to translate")
