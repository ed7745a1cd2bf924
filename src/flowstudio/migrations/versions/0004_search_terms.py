"""SQLite prompt search by exact terms: a table of every term the FTS5 index holds for prompts.

A prefix query ("product"*) makes FTS5 merge the doclists of every matching term over all users
before the first row comes out (20 ms for a common word on a 1M-row history); the same words
spelled out as exact terms ("product" OR "products") are read lazily, newest first, and stop at
the page. This table lets a search turn a prefix into its terms.

New terms come from FTS5 itself, so they are tokenized exactly like the index: a trigger puts the
prompt into an empty contentless FTS5 table with the same tokenizer, copies that table's
vocabulary, and empties it again. Terms of deleted prompts stay (an extra term matches nothing).
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"

_TOKENIZER = "tokenize='unicode61 remove_diacritics 2'"  # as generations_fts (0002, 0003)
_COLLECT = (
    "INSERT INTO generations_fts_new(prompt) VALUES (new.prompt); "
    "INSERT OR IGNORE INTO generations_fts_terms(term) SELECT term FROM generations_fts_new_vocab; "
    "INSERT INTO generations_fts_new(generations_fts_new) VALUES ('delete-all');"
)


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.execute("CREATE TABLE generations_fts_terms (term TEXT PRIMARY KEY) WITHOUT ROWID")
    op.execute(
        f"CREATE VIRTUAL TABLE generations_fts_new USING fts5(prompt, content='', {_TOKENIZER})"
    )
    op.execute(
        "CREATE VIRTUAL TABLE generations_fts_new_vocab USING fts5vocab(generations_fts_new, 'row')"
    )
    op.execute(
        "CREATE TRIGGER generations_fts_terms_insert AFTER INSERT ON generations "
        f"BEGIN {_COLLECT} END"
    )
    op.execute(
        "CREATE TRIGGER generations_fts_terms_update AFTER UPDATE OF prompt ON generations "
        f"BEGIN {_COLLECT} END"
    )
    # The existing prompts' terms, read once from the index (the 'col' vocabulary leaves out the
    # owner column's terms). In the main schema: D1 has no temp schema.
    op.execute("CREATE VIRTUAL TABLE generations_fts_vocab USING fts5vocab(generations_fts, 'col')")
    op.execute(
        "INSERT OR IGNORE INTO generations_fts_terms(term) "
        "SELECT term FROM generations_fts_vocab WHERE col = 'prompt'"
    )
    op.execute("DROP TABLE generations_fts_vocab")


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.execute("DROP TRIGGER IF EXISTS generations_fts_terms_insert")
    op.execute("DROP TRIGGER IF EXISTS generations_fts_terms_update")
    op.execute("DROP TABLE IF EXISTS generations_fts_new_vocab")
    op.execute("DROP TABLE IF EXISTS generations_fts_new")
    op.execute("DROP TABLE IF EXISTS generations_fts_terms")
