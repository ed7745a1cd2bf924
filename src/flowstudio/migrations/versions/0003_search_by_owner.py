"""SQLite prompt search per owner: the FTS5 table also indexes the owner, so a user's matches are
found newest first without materialising every user's matches.
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"

_ROWID = "(SELECT rowid FROM generation_search WHERE generation_id = {row}.id)"


def _recreate(columns: str, insert_columns: str, insert_values: str, select_values: str) -> None:
    for trigger in ("insert", "delete", "update"):
        op.execute(f"DROP TRIGGER IF EXISTS generations_fts_{trigger}")
    op.execute("DROP TABLE IF EXISTS generations_fts")
    op.execute(
        f"CREATE VIRTUAL TABLE generations_fts USING fts5({columns}, "
        "tokenize='unicode61 remove_diacritics 2')"
    )
    op.execute(
        "CREATE TRIGGER generations_fts_insert AFTER INSERT ON generations BEGIN "
        "INSERT INTO generation_search(generation_id) VALUES (new.id); "
        f"INSERT INTO generations_fts(rowid, {insert_columns}) VALUES ("
        f"{_ROWID.format(row='new')}, {insert_values}); END"
    )
    op.execute(
        "CREATE TRIGGER generations_fts_delete AFTER DELETE ON generations BEGIN "
        f"DELETE FROM generations_fts WHERE rowid = {_ROWID.format(row='old')}; "
        "DELETE FROM generation_search WHERE generation_id = old.id; END"
    )
    op.execute(
        "CREATE TRIGGER generations_fts_update AFTER UPDATE OF prompt ON generations BEGIN "
        "UPDATE generations_fts SET prompt = new.prompt WHERE rowid = "
        f"{_ROWID.format(row='new')}; END"
    )
    op.execute(
        f"INSERT INTO generations_fts(rowid, {insert_columns}) SELECT s.rowid, {select_values} "
        "FROM generations g JOIN generation_search s ON s.generation_id = g.id"
    )


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    _recreate(
        "prompt, owner",
        "prompt, owner",
        "new.prompt, 'u' || new.user_id",
        "g.prompt, 'u' || g.user_id",
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    _recreate("prompt", "prompt", "new.prompt", "g.prompt")
