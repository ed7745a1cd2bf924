"""Prompt search through the term table (SQLite): a prefix spelled out as its indexed terms finds
exactly what FTS5's own prefix query finds, and the table keeps up with new and changed prompts."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, text, update

from flowstudio import migrate
from flowstudio.auth.models import User
from flowstudio.db import Reads, session_factory
from flowstudio.generations import history_json, repository
from flowstudio.generations.models import Generation
from flowstudio.generations.repository import HistoryFilters
from flowstudio.i18n.search import index_text, search_terms
from flowstudio.ids import uuid7
from flowstudio.runs.models import Run

# Words that are prefixes of one another, case and diacritic variants, ligatures, CJK, digits,
# underscores and hyphens (separators for FTS5), and letters that fold differently in Python.
UNICODE_WORDS = (
    "product products production produce pro prompt PRODUCT Product studio stud Studios "
    "café cafe CAFÉ cafés naïve naive 歷史 歷史書 史 kettle kettles k2 k9x x xylophone foo_bar "
    "e-mail İstanbul istanbul straße STRASSE Œuvre œuvre ﬁsh fish 100 1000 10x ǅemal "
    "ελληνικά Ελλάδα привет"
).split()
ASCII_WORDS = (
    "product products production produce pro prompt studio stud studios kettle kettles k2 k9x "
    "x xylophone 100 1000 10x lamp lampshade lantern la"
).split()


async def add_history(engine, words: list[str], *, seed: int, count: int) -> list[uuid.UUID]:
    """Two users' generations with drawn prompts, inserted oldest first; the first user's id."""
    draw = random.Random(seed)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    users = []
    async with session_factory(engine)() as db:
        for name in ("searcher", "other"):
            user = User(email=f"{name}-{uuid.uuid4().hex[:8]}@example.com", password_hash="x")
            db.add(user)
            await db.flush()
            run = Run(user_id=user.id, flow_slug="quick", flow_snapshot={}, title="t", inputs={})
            db.add(run)
            await db.flush()
            users.append((user.id, run.id))
        for i in range(count):
            user_id, run_id = draw.choice(users)
            prompt = " ".join(draw.choice(words) for _ in range(draw.randint(1, 6)))
            db.add(
                Generation(
                    id=uuid7(),
                    user_id=user_id,
                    run_id=run_id,
                    step_id="image",
                    flow_slug="quick",
                    batch_id=uuid7(),
                    status=draw.choice(("succeeded", "failed")),
                    prompt=prompt,
                    params={},
                    provider="local",
                    model="m",
                    created_at=start + timedelta(seconds=i),
                )
            )
            await db.flush()  # one at a time: FTS5 rowids follow created_at, as in service
        await db.commit()
    return [user_id for user_id, _ in users]


async def search(engine, user_id: uuid.UUID, q: str, *, limit: int, **filters) -> list[uuid.UUID]:
    """Every page of a search, walked with the keyset cursor."""
    found: list[uuid.UUID] = []
    after = None
    values = history_json.row_values(engine.dialect.name)
    reads = Reads(engine)
    try:
        while True:
            page = await reads.run(
                repository.history_rows,
                user_id=user_id,
                filters=HistoryFilters(terms=tuple(search_terms(q)), **filters),
                after=after,
                limit=limit,
            )
            found.extend(values.uuid(row[0]) for row in page)
            if len(page) < limit:
                return found
            after = history_json.position(page[-1], values)
    finally:
        await reads.close()


def drawn_queries(words: list[str], *, seed: int, count: int) -> list[str]:
    draw = random.Random(seed)
    queries = []
    for _ in range(count):
        chosen = [draw.choice(words) for _ in range(draw.randint(1, 3))]
        queries.append(" ".join(w[: draw.randint(1, len(w))] for w in chosen))
    return queries


def prefix_query_only(connection, word):  # noqa: ANN001 — stands in for repository._prefix_terms
    return None


async def prefix_terms(engine, word: str) -> list[str] | None:
    async with engine.connect() as connection:
        return await connection.run_sync(repository._prefix_terms, word)


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_terms_find_what_the_prefix_query_finds(engine, monkeypatch):
    searcher, _ = await add_history(engine, UNICODE_WORDS, seed=1, count=300)
    fixed = (
        "p pro prod product products produc PRODUCT stud studio café cafe caf cafés naï naive "
        "歷 歷史 史 istan İstan stras straße strasse fi fish ﬁ foo_b foo e mail e-m œ oeuvre "
        "10 100 k k9 x xy ǆ ελλ привет nothing"
    ).split()
    queries = fixed + [f"{a} {b}" for a, b in zip(fixed, reversed(fixed), strict=True)]
    queries += drawn_queries(UNICODE_WORDS, seed=2, count=150)
    expanded = await prefix_terms(engine, "prod")
    assert expanded == ["produce", "product", "production", "products"]
    assert await prefix_terms(engine, "caf") == ["cafe", "cafes"]
    # Traditional is indexed as Simplified, a CJK run as its bigrams and its last character.
    assert await prefix_terms(engine, "历") == ["历史"]
    assert await prefix_terms(engine, "史") == ["史", "史书"]
    assert await prefix_terms(engine, "nai") == ["naive"]  # folded: no diacritics
    by_terms = {q: await search(engine, searcher, q, limit=7) for q in queries}
    monkeypatch.setattr(repository, "_prefix_terms", prefix_query_only)
    by_prefix = {q: await search(engine, searcher, q, limit=7) for q in queries}
    assert by_terms == by_prefix
    assert sum(1 for found in by_terms.values() if found) > len(queries) / 2


async def test_search_matches_each_word_as_a_prefix_on_drawn_data(engine):
    searcher, _ = await add_history(engine, ASCII_WORDS, seed=3, count=250)
    async with session_factory(engine)() as db:
        rows = await db.execute(
            select(Generation.id, Generation.prompt, Generation.status).where(
                Generation.user_id == searcher
            )
        )
        prompts = {row.id: (row.prompt, row.status) for row in rows}
    queries = ["pro", "la lamp", "1", "k", "studios x"]
    for q in queries + drawn_queries(ASCII_WORDS, seed=4, count=60):
        for status in (None, "failed"):
            expected = {
                generation_id
                for generation_id, (prompt, row_status) in prompts.items()
                if all(any(t.startswith(w) for t in prompt.split()) for w in q.split())
                and status in (None, row_status)
            }
            statuses = (status,) if status else ()
            found = await search(engine, searcher, q, limit=9, statuses=statuses)
            assert len(found) == len(set(found))
            assert set(found) == expected, q


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_new_and_changed_prompts_add_their_terms(engine):
    searcher, _ = await add_history(engine, ["kettle"], seed=5, count=10)
    async with session_factory(engine)() as db:
        await db.execute(
            update(Generation)
            .where(Generation.user_id == searcher)
            .values(prompt="Ünïcorn Lampshade", search_text=index_text("Ünïcorn Lampshade"))
        )
        await db.commit()
    await add_history(engine, ["Teapots"], seed=6, count=1)
    async with session_factory(engine)() as db:
        terms = set(await db.scalars(text("SELECT term FROM generations_fts_terms")))
        await db.execute(
            text("CREATE VIRTUAL TABLE temp.vocab USING fts5vocab(main, generations_fts, 'col')")
        )
        indexed = set(await db.scalars(text("SELECT term FROM temp.vocab WHERE col = 'prompt'")))
    assert {"kettle", "unicorn", "lampshade", "teapots"} <= indexed <= terms
    changed = await search(engine, searcher, "", limit=5)
    assert await search(engine, searcher, "unic lamps", limit=5) == changed != []


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_a_word_typed_in_full_is_found_without_its_term(engine):
    searcher, _ = await add_history(engine, ["kettle", "kettles"], seed=7, count=40)
    expected = await search(engine, searcher, "kettle", limit=50)
    async with session_factory(engine)() as db:
        await db.execute(text("DELETE FROM generations_fts_terms WHERE term = 'kettle'"))
        await db.commit()
    assert await search(engine, searcher, "kettle", limit=50) == expected != []


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_a_prefix_of_too_many_terms_uses_the_prefix_query(engine, monkeypatch):
    searcher, _ = await add_history(engine, ASCII_WORDS, seed=8, count=60)
    expected = await search(engine, searcher, "pro", limit=4)
    assert await prefix_terms(engine, "pro") is not None
    monkeypatch.setattr(repository, "MAX_PREFIX_TERMS", 2)
    assert await prefix_terms(engine, "pro") is None
    assert await search(engine, searcher, "pro", limit=4) == expected != []


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_fts5_reads_every_token_as_itself(engine):
    """What the prefix expansion assumes of the `ascii` tokenizer, checked against this SQLite
    with tokens of every script, including letters newer than unicode61's tables."""
    draw = random.Random(11)
    letters = [chr(c) for c in range(0x20, 0x3134F) if chr(c).isalnum()]
    text_of_everything = " ".join(
        "".join(draw.choice(letters) for _ in range(draw.randint(1, 6))) for _ in range(3000)
    )
    tokens = set(index_text(text_of_everything + " 陶瓷茶壺 ｇｌａｚｅｄ 𞣇0").split())
    async with session_factory(engine)() as db:
        await db.execute(
            text("CREATE VIRTUAL TABLE temp.probe USING fts5(prompt, tokenize='ascii')")
        )
        await db.execute(
            text("CREATE VIRTUAL TABLE temp.probe_vocab USING fts5vocab(temp, probe, 'row')")
        )
        await db.execute(
            text("INSERT INTO temp.probe(prompt) VALUES (:p)"), {"p": " ".join(sorted(tokens))}
        )
        assert set(await db.scalars(text("SELECT term FROM temp.probe_vocab"))) == tokens


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_the_migration_collects_the_terms_of_existing_prompts(engine):
    await add_history(engine, UNICODE_WORDS, seed=9, count=80)
    await migrate.downgrade(engine, "0003")
    await migrate.upgrade(engine)
    async with session_factory(engine)() as db:
        terms = list(await db.scalars(text("SELECT term FROM generations_fts_terms")))
        await db.execute(
            text("CREATE VIRTUAL TABLE temp.vocab USING fts5vocab(main, generations_fts, 'col')")
        )
        indexed = list(await db.scalars(text("SELECT term FROM temp.vocab WHERE col = 'prompt'")))
    assert terms == indexed != []
