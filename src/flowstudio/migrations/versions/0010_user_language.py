"""The language a user picked for the pages (`users.language`, a BCP 47 tag; NULL: none yet)."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"


def upgrade() -> None:
    op.add_column("users", sa.Column("language", sa.String(length=16), nullable=True))


def downgrade() -> None:
    op.execute("ALTER TABLE users DROP COLUMN language")
