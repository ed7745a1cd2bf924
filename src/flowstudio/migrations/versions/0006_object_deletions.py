"""Objects that must go: keys of purged generations whose delete the store refused."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"


def upgrade() -> None:
    op.create_table(
        "object_deletions",
        sa.Column("key", sa.String(length=1024), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_object_deletions")),
    )


def downgrade() -> None:
    op.drop_table("object_deletions")
