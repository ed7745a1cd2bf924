"""Search text in any language: what a prompt is indexed as, and what a search box looks for.

Both sides go through the same folding, so they meet whatever the user typed:

- NFKC (full-width ``ｇｌａｚｅｄ`` is ``glazed``, ``ﾃｨｰ`` is ``ティー``), case folding, and
  combining diacritics dropped (``café`` is ``cafe``; the kana voicing marks stay);
- Traditional Chinese characters become Simplified through OpenCC's character table
  (``茶壺`` is ``茶壶``). Only the character table, never OpenCC's phrase tables: folding then
  maps each character on its own, so a folded search is a substring of the folded prompt
  exactly where the search is a substring of the prompt.

A folded text is cut into tokens: runs of letters and digits (Unicode L* and N*), with each
run of CJK characters (Han, kana, Hangul) cut again into overlapping bigrams, and its last
character once more on its own. ``一只红色的陶瓷茶壶`` is indexed as
``一只 只红 红色 色的 的陶 陶瓷 瓷茶 茶壶 壶``, so:

- a CJK search of two or more characters is the phrase of its bigrams: ``陶瓷茶壶`` is
  ``陶瓷 瓷茶 茶壶`` in a row, found wherever those characters stand together;
- a one-character CJK search matches as a prefix: ``茶`` finds every prompt that holds the
  character (each character starts a bigram or ends its run);
- any other word matches as a prefix of a token, as before.

The stored prompt is never changed: the tokens live in `generations.search_text`, which the
full-text indexes read (FTS5 on SQLite and D1, a tsvector on PostgreSQL).
"""

from __future__ import annotations

import functools
import unicodedata
from dataclasses import dataclass

# Han (with its extensions and compatibility ideographs), kana, Hangul: scripts written
# without spaces between words, searched by bigrams.
_CJK_RANGES = (
    (0x3040, 0x30FF),  # Hiragana, Katakana
    (0x31F0, 0x31FF),  # Katakana phonetic extensions
    (0x3400, 0x4DBF),  # CJK extension A
    (0x4E00, 0x9FFF),  # CJK unified ideographs
    (0xAC00, 0xD7AF),  # Hangul syllables
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
    (0x20000, 0x3134F),  # CJK extensions B to G
)
# Where OpenCC's table has Traditional characters (Han only).
_HAN_RANGES = ((0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0x20000, 0x3134F))
# The kana voicing marks are part of the letter (が is not か), unlike Latin diacritics.
_KEPT_MARKS = frozenset("\u3099\u309a")

MAX_SEARCH_TERMS = 8


def is_cjk(char: str) -> bool:
    code = ord(char)
    return any(low <= code <= high for low, high in _CJK_RANGES)


@functools.cache
def _traditional_to_simplified() -> dict[int, str]:
    """OpenCC's Traditional-to-Simplified table, one character to one character, read from
    OpenCC itself (each Han character converted alone, so its phrase tables never apply)."""
    import opencc

    characters = [chr(c) for low, high in _HAN_RANGES for c in range(low, high + 1)]
    converted = opencc.OpenCC("t2s").convert("\n".join(characters)).split("\n")
    if len(converted) != len(characters):  # pragma: no cover - a broken OpenCC build
        raise RuntimeError("OpenCC changed the number of characters it was given")
    return {
        ord(old): new
        for old, new in zip(characters, converted, strict=True)
        if new != old and len(new) == 1
    }


def is_traditional(text: str) -> bool:
    """Whether `text` holds a Han character that OpenCC writes differently in Simplified."""
    table = _traditional_to_simplified()
    return any(ord(c) in table for c in text)


def fold(text: str) -> str:
    """NFKC, case folding, Latin-style diacritics dropped, Traditional to Simplified."""
    text = unicodedata.normalize("NFKC", text).casefold()
    decomposed = unicodedata.normalize("NFD", text)
    if any(unicodedata.category(c) == "Mn" for c in decomposed):
        text = unicodedata.normalize(
            "NFC",
            "".join(c for c in decomposed if c in _KEPT_MARKS or unicodedata.category(c) != "Mn"),
        )
    return text.translate(_traditional_to_simplified())


def _is_token_char(char: str) -> bool:
    category = unicodedata.category(char)
    return category[0] in "LN" or char in _KEPT_MARKS


def _runs(folded: str) -> list[tuple[str, bool]]:
    """The folded text's runs of token characters, each with whether it is CJK."""
    runs: list[tuple[str, bool]] = []
    current: list[str] = []
    current_cjk = False
    for char in folded:
        if not _is_token_char(char):
            if current:
                runs.append(("".join(current), current_cjk))
                current = []
            continue
        cjk = is_cjk(char)  # the kana voicing marks are in the kana block
        if current and cjk != current_cjk:
            runs.append(("".join(current), current_cjk))
            current = []
        current.append(char)
        current_cjk = cjk
    if current:
        runs.append(("".join(current), current_cjk))
    return runs


def _cjk_units(run: str) -> list[str]:
    """A CJK run's characters, each kana voicing mark kept with the letter before it."""
    units: list[str] = []
    for char in run:
        if char in _KEPT_MARKS and units:
            units[-1] += char
        else:
            units.append(char)
    return units


def _bigrams(units: list[str]) -> list[str]:
    return [units[i] + units[i + 1] for i in range(len(units) - 1)]


def index_text(prompt: str) -> str:
    """The tokens a prompt is searched by, separated by spaces."""
    tokens: list[str] = []
    for run, cjk in _runs(fold(prompt)):
        if cjk:
            units = _cjk_units(run)
            tokens.extend(_bigrams(units))
            tokens.append(units[-1])
        else:
            tokens.append(run)
    return " ".join(tokens)


@dataclass(frozen=True)
class Term:
    """One thing a search looks for: a token sequence that must stand in a row, the last
    token matching as a prefix when `prefix` (a word, or a lone CJK character)."""

    tokens: tuple[str, ...]
    prefix: bool
    text: str  # the folded run it came from

    def matches(self, indexed: str) -> bool:
        """Whether an `index_text` holds this term (what the database indexes answer)."""
        held = indexed.split(" ")
        width = len(self.tokens)
        for start in range(len(held) - width + 1):
            window = held[start : start + width]
            if window[:-1] == list(self.tokens[:-1]) and (
                window[-1].startswith(self.tokens[-1])
                if self.prefix
                else window[-1] == self.tokens[-1]
            ):
                return True
        return False


def search_terms(q: str) -> list[Term]:
    """What a search box looks for: every term must match (at most MAX_SEARCH_TERMS)."""
    terms: list[Term] = []
    for run, cjk in _runs(fold(q)):
        if cjk:
            units = _cjk_units(run)
            if len(units) == 1:
                terms.append(Term((run,), prefix=True, text=run))
            else:
                terms.append(Term(tuple(_bigrams(units)), prefix=False, text=run))
        else:
            terms.append(Term((run,), prefix=True, text=run))
    return list(dict.fromkeys(terms))[:MAX_SEARCH_TERMS]
