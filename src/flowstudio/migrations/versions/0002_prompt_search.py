"""Full-text search over prompts: an FTS5 index on SQLite, a tsvector + GIN index on PostgreSQL."""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "ALTER TABLE generations ADD COLUMN prompt_tsv tsvector "
            "GENERATED ALWAYS AS (to_tsvector('simple', prompt)) STORED"
        )
        op.execute("CREATE INDEX ix_generations_prompt_tsv ON generations USING gin (prompt_tsv)")
        return
    # FTS5 rows are keyed by an INTEGER PRIMARY KEY of a small map table, so their ids stay
    # stable through VACUUM (which may renumber the implicit rowids of generations).
    op.execute(
        "CREATE TABLE generation_search ("
        "rowid INTEGER PRIMARY KEY, generation_id CHAR(32) NOT NULL UNIQUE)"
    )
    op.execute(
        "CREATE VIRTUAL TABLE generations_fts USING fts5("
        "prompt, tokenize='unicode61 remove_diacritics 2')"
    )
    op.execute(
        "CREATE TRIGGER generations_fts_insert AFTER INSERT ON generations BEGIN "
        "INSERT INTO generation_search(generation_id) VALUES (new.id); "
        "INSERT INTO generations_fts(rowid, prompt) VALUES ("
        "(SELECT rowid FROM generation_search WHERE generation_id = new.id), new.prompt); END"
    )
    op.execute(
        "CREATE TRIGGER generations_fts_delete AFTER DELETE ON generations BEGIN "
        "DELETE FROM generations_fts WHERE rowid = "
        "(SELECT rowid FROM generation_search WHERE generation_id = old.id); "
        "DELETE FROM generation_search WHERE generation_id = old.id; END"
    )
    op.execute(
        "CREATE TRIGGER generations_fts_update AFTER UPDATE OF prompt ON generations BEGIN "
        "UPDATE generations_fts SET prompt = new.prompt WHERE rowid = "
        "(SELECT rowid FROM generation_search WHERE generation_id = new.id); END"
    )
    op.execute("INSERT INTO generation_search(generation_id) SELECT id FROM generations")
    op.execute(
        "INSERT INTO generations_fts(rowid, prompt) SELECT s.rowid, g.prompt "
        "FROM generations g JOIN generation_search s ON s.generation_id = g.id"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_generations_prompt_tsv")
        op.execute("ALTER TABLE generations DROP COLUMN IF EXISTS prompt_tsv")
        return
    for trigger in ("insert", "delete", "update"):
        op.execute(f"DROP TRIGGER IF EXISTS generations_fts_{trigger}")
    op.execute("DROP TABLE IF EXISTS generations_fts")
    op.execute("DROP TABLE IF EXISTS generation_search")
