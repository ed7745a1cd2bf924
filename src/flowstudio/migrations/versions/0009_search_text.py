"""Search in every language: prompts are indexed by their folded tokens (`search_text`).

The indexes read the prompt as it was typed, so `茶壶` did not find `一只红色的陶瓷茶壶` (a run of
Chinese characters was one token), `茶壺` did not find `茶壶`, and `ｇｌａｚｅｄ` did not find
`glazed`. Now every generation carries `search_text`, its prompt folded (NFKC, case, diacritics,
Traditional to Simplified) and cut into tokens, CJK runs into overlapping bigrams
(`flowstudio.i18n.search`), written by the application with the row; the full-text indexes
read it instead of the prompt:

- SQLite and D1: the FTS5 table is rebuilt from `search_text`, and so is the table of its terms
  (0004). Its tokenizer is now `ascii`, which splits at the spaces between the tokens and keeps
  each as it is: `unicode61` knows Unicode 6.1 only, and split or dropped newer letters;
- PostgreSQL: `prompt_tsv` is the tokens as they are (`array_to_tsvector`), not parsed again
  by the text search parser, whose idea of a letter depends on the server's locale, each
  prefixed with its owner (`<user id hex>/茶壶`): every search is one user's, and a rare word
  of a user with a long history is then one short posting list, not the intersection of the
  word's (over all users) with the user's whole history.

Existing rows are folded here, a page at a time, then the indexes are rebuilt from them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from flowstudio.i18n.search import index_text

revision = "0009"
down_revision = "0008"

_PAGE = 2000
_OLD_TOKENIZER = "tokenize='unicode61 remove_diacritics 2'"
_NEW_TOKENIZER = "tokenize='ascii'"
_OWNER = "replace(user_id::text, '-', '') || '/'"  # what each PostgreSQL lexeme starts with
_ROWID = "(SELECT rowid FROM generation_search WHERE generation_id = {row}.id)"


def _backfill(connection: sa.Connection) -> None:
    generations = sa.table(
        "generations", sa.column("id"), sa.column("prompt"), sa.column("search_text")
    )
    after = None
    while True:
        query = sa.select(generations.c.id, generations.c.prompt).order_by(generations.c.id)
        if after is not None:
            query = query.where(generations.c.id > after)
        rows = connection.execute(query.limit(_PAGE)).all()
        if not rows:
            return
        connection.execute(
            sa.update(generations)
            .where(generations.c.id == sa.bindparam("row_id"))
            .values(search_text=sa.bindparam("text")),
            [{"row_id": row.id, "text": index_text(row.prompt)} for row in rows],
        )
        after = rows[-1].id


def _sqlite_index(source: str, tokenizer: str) -> None:
    """(Re)build the FTS5 table, its triggers and its term table from column `source`."""
    for trigger in ("fts_insert", "fts_delete", "fts_update", "fts_terms_insert"):
        op.execute(f"DROP TRIGGER IF EXISTS generations_{trigger}")
    op.execute("DROP TRIGGER IF EXISTS generations_fts_terms_update")
    for name in ("generations_fts_new_vocab", "generations_fts_new", "generations_fts"):
        op.execute(f"DROP TABLE IF EXISTS {name}")
    op.execute(f"CREATE VIRTUAL TABLE generations_fts USING fts5(prompt, owner, {tokenizer})")
    op.execute(
        "CREATE TRIGGER generations_fts_insert AFTER INSERT ON generations BEGIN "
        "INSERT INTO generation_search(generation_id) VALUES (new.id); "
        "INSERT INTO generations_fts(rowid, prompt, owner) VALUES ("
        f"{_ROWID.format(row='new')}, new.{source}, 'u' || new.user_id); END"
    )
    op.execute(
        "CREATE TRIGGER generations_fts_delete AFTER DELETE ON generations BEGIN "
        f"DELETE FROM generations_fts WHERE rowid = {_ROWID.format(row='old')}; "
        "DELETE FROM generation_search WHERE generation_id = old.id; END"
    )
    op.execute(
        f"CREATE TRIGGER generations_fts_update AFTER UPDATE OF {source} ON generations BEGIN "
        f"UPDATE generations_fts SET prompt = new.{source} WHERE rowid = "
        f"{_ROWID.format(row='new')}; END"
    )
    op.execute(
        "INSERT INTO generations_fts(rowid, prompt, owner) "
        f"SELECT s.rowid, g.{source}, 'u' || g.user_id "
        "FROM generations g JOIN generation_search s ON s.generation_id = g.id"
    )
    # The terms table (0004): filled from every new row's tokens, by the same tokenizer.
    collect = (
        f"INSERT INTO generations_fts_new(prompt) VALUES (new.{source}); "
        "INSERT OR IGNORE INTO generations_fts_terms(term) "
        "SELECT term FROM generations_fts_new_vocab; "
        "INSERT INTO generations_fts_new(generations_fts_new) VALUES ('delete-all');"
    )
    op.execute(
        f"CREATE VIRTUAL TABLE generations_fts_new USING fts5(prompt, content='', {tokenizer})"
    )
    op.execute(
        "CREATE VIRTUAL TABLE generations_fts_new_vocab USING fts5vocab(generations_fts_new, 'row')"
    )
    op.execute(
        "CREATE TRIGGER generations_fts_terms_insert AFTER INSERT ON generations "
        f"BEGIN {collect} END"
    )
    op.execute(
        f"CREATE TRIGGER generations_fts_terms_update AFTER UPDATE OF {source} ON generations "
        f"BEGIN {collect} END"
    )
    op.execute("DELETE FROM generations_fts_terms")
    op.execute("CREATE VIRTUAL TABLE generations_fts_vocab USING fts5vocab(generations_fts, 'col')")
    op.execute(
        "INSERT OR IGNORE INTO generations_fts_terms(term) "
        "SELECT term FROM generations_fts_vocab WHERE col = 'prompt'"
    )
    op.execute("DROP TABLE generations_fts_vocab")


def _postgres_index(expression: str) -> None:
    op.execute("DROP INDEX IF EXISTS ix_generations_prompt_tsv")
    op.execute("ALTER TABLE generations DROP COLUMN IF EXISTS prompt_tsv")
    op.execute(
        "ALTER TABLE generations ADD COLUMN prompt_tsv tsvector "
        f"GENERATED ALWAYS AS ({expression}) STORED"
    )
    op.execute("CREATE INDEX ix_generations_prompt_tsv ON generations USING gin (prompt_tsv)")


def upgrade() -> None:
    op.add_column(
        "generations",
        sa.Column("search_text", sa.Text(), nullable=False, server_default=""),
    )
    _backfill(op.get_bind())
    if op.get_bind().dialect.name == "postgresql":
        _postgres_index(
            f"array_to_tsvector(string_to_array({_OWNER} || replace(search_text, ' ', ' ' || "
            f"{_OWNER}), ' '))"
        )
    else:
        _sqlite_index("search_text", _NEW_TOKENIZER)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _postgres_index("to_tsvector('simple', prompt)")
    else:
        _sqlite_index("prompt", _OLD_TOKENIZER)
    op.drop_column("generations", "search_text")
