"""Queue admission that holds under concurrency: a CHECK on the user's queue row.

A generate read the user's pending count and then inserted its rows. Two requests of one user
could both read a count under the limit and both insert (on PostgreSQL a user's first requests
had no queue row yet to lock; on D1 the reads go out before the writes' batch). Now a request's
own unit ends with ``UPDATE user_queues SET refused = 1 WHERE user_id = … AND pending > limit``
after its inserts: the count it sees there already holds the request's rows and every committed
request's (the triggers of 0005 keep it, and the row is locked or the writer is alone), and a
user past the limit fails the CHECK, which undoes the whole unit. `refused` is never anything
but 0 in a stored row.
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"


def upgrade() -> None:
    # Plain SQL: the same statement on SQLite, D1 and PostgreSQL, with no table rebuild.
    op.execute(
        "ALTER TABLE user_queues ADD COLUMN refused INTEGER DEFAULT 0 NOT NULL "
        "CONSTRAINT ck_user_queues_admission CHECK (refused = 0)"
    )


def downgrade() -> None:
    # The CHECK belongs to the column, so SQLite drops it with the column (no table rebuild).
    op.execute("ALTER TABLE user_queues DROP COLUMN refused")
