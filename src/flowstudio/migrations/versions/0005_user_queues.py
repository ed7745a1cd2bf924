"""The queue at depth: user_queues, kept in step with generations by triggers.

The claim used to rank every due pending row with a window function on each poll, so its cost
grew with the backlog (693 ms at 100k pending on SQLite, inside the write lock). Now one row per
user says how many of the user's generations are pending and running, when the earliest pending
one is due and when the user was last served; a claim walks the users with due work in the order
they were last served and takes each one's oldest due row from a per-user index.

Triggers keep the rows in step, whatever path changes a generation (request, claim, finish,
retry, release, recovery, cancel, delete, purge), in the same transaction:
- a generation entering or leaving `pending` / `running` moves the user's counts;
- `next_due_at` is re-read from ix_generations_pending (one index seek);
- a claim (pending -> running) sets `served_at` to the claim's time, which sends the user to
  the back of the round.

On PostgreSQL the trigger locks the user's row. A transaction that changes the rows of several
users therefore takes those locks in the order it changes the rows; code that does so changes
them in user order (recovery does), so two such transactions cannot deadlock.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"

_PENDING = sa.text("status = 'pending'")
_QUEUED = "('pending', 'running')"
_NEVER_SQLITE = "'1970-01-01 00:00:00.000000'"

# SQLite: a comparison is 0 or 1, so it adds up as a count.
_SQLITE_FOLLOW = """
    INSERT OR IGNORE INTO user_queues(user_id, pending, running, next_due_at, served_at)
        VALUES ({row}.user_id, 0, 0, NULL, {never});
    UPDATE user_queues SET
        pending = pending + {pending},
        running = running + {running},
        next_due_at = (SELECT min(next_attempt_at) FROM generations
                       WHERE user_id = {row}.user_id AND status = 'pending'),
        served_at = {served_at}
    WHERE user_id = {row}.user_id;
"""

_SQLITE_TRIGGERS = {
    "user_queues_insert": (
        f"AFTER INSERT ON generations WHEN new.status IN {_QUEUED}",
        _SQLITE_FOLLOW.format(
            row="new",
            never=_NEVER_SQLITE,
            pending="(new.status = 'pending')",
            running="(new.status = 'running')",
            served_at="served_at",
        ),
    ),
    "user_queues_update": (
        "AFTER UPDATE OF status, next_attempt_at ON generations "
        f"WHEN (old.status IS NOT new.status AND (old.status IN {_QUEUED} "
        f"OR new.status IN {_QUEUED})) "
        "OR (new.status = 'pending' AND old.next_attempt_at IS NOT new.next_attempt_at)",
        _SQLITE_FOLLOW.format(
            row="new",
            never=_NEVER_SQLITE,
            pending="(new.status = 'pending') - (old.status = 'pending')",
            running="(new.status = 'running') - (old.status = 'running')",
            served_at=(
                "CASE WHEN old.status = 'pending' AND new.status = 'running' "
                "THEN new.updated_at ELSE served_at END"
            ),
        ),
    ),
    # No INSERT here: when a user is deleted, its generations go by cascade and its queue row
    # with them.
    "user_queues_delete": (
        f"AFTER DELETE ON generations WHEN old.status IN {_QUEUED}",
        """
    UPDATE user_queues SET
        pending = pending - (old.status = 'pending'),
        running = running - (old.status = 'running'),
        next_due_at = (SELECT min(next_attempt_at) FROM generations
                       WHERE user_id = old.user_id AND status = 'pending')
    WHERE user_id = old.user_id;
""",
    ),
}

_POSTGRES_FUNCTION = """
CREATE FUNCTION user_queues_follow() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    owner uuid;
    pending_delta integer := 0;
    running_delta integer := 0;
    claimed boolean := false;
BEGIN
    IF TG_OP = 'DELETE' THEN
        owner := OLD.user_id;
        pending_delta := -(OLD.status = 'pending')::integer;
        running_delta := -(OLD.status = 'running')::integer;
    ELSE
        owner := NEW.user_id;
        pending_delta := (NEW.status = 'pending')::integer;
        running_delta := (NEW.status = 'running')::integer;
        IF TG_OP = 'UPDATE' THEN
            pending_delta := pending_delta - (OLD.status = 'pending')::integer;
            running_delta := running_delta - (OLD.status = 'running')::integer;
            claimed := OLD.status = 'pending' AND NEW.status = 'running';
        END IF;
    END IF;
    -- The user's row is locked first, and only then is the earliest due time read: in READ
    -- COMMITTED each statement here takes a new snapshot, so once the lock is ours every
    -- other change to this user's queue has committed and is seen. Reading it in the same
    -- statement as the update used the snapshot from before the wait, and a finish that
    -- waited for a request's insert wrote "nothing due" over a pending row (it never ran).
    PERFORM 1 FROM user_queues WHERE user_id = owner FOR UPDATE;
    IF NOT FOUND THEN
        IF TG_OP = 'DELETE' THEN
            -- A deleted user's generations go by cascade, its row with them.
            RETURN NULL;
        END IF;
        -- A user's first queued generation makes its row.
        INSERT INTO user_queues(user_id, pending, running, next_due_at, served_at)
            VALUES (owner, 0, 0, NULL, 'epoch') ON CONFLICT (user_id) DO NOTHING;
        PERFORM 1 FROM user_queues WHERE user_id = owner FOR UPDATE;
    END IF;
    UPDATE user_queues SET
        pending = pending + pending_delta,
        running = running + running_delta,
        next_due_at = (SELECT min(next_attempt_at) FROM generations
                       WHERE user_id = owner AND status = 'pending'),
        served_at = CASE WHEN claimed THEN NEW.updated_at ELSE served_at END
    WHERE user_id = owner;
    RETURN NULL;
END
$$
"""

_POSTGRES_TRIGGERS = {
    "user_queues_insert": f"AFTER INSERT ON generations FOR EACH ROW "
    f"WHEN (NEW.status IN {_QUEUED})",
    "user_queues_update": "AFTER UPDATE OF status, next_attempt_at ON generations FOR EACH ROW "
    f"WHEN ((OLD.status IS DISTINCT FROM NEW.status AND (OLD.status IN {_QUEUED} "
    f"OR NEW.status IN {_QUEUED})) OR (NEW.status = 'pending' "
    "AND OLD.next_attempt_at IS DISTINCT FROM NEW.next_attempt_at))",
    "user_queues_delete": f"AFTER DELETE ON generations FOR EACH ROW "
    f"WHEN (OLD.status IN {_QUEUED})",
}

# The queues as they stand, from the generations themselves.
_BACKFILL = """
INSERT INTO user_queues(user_id, pending, running, next_due_at, served_at)
SELECT user_id,
       sum(CASE WHEN status = 'pending' THEN 1 ELSE 0 END),
       sum(CASE WHEN status = 'running' THEN 1 ELSE 0 END),
       min(CASE WHEN status = 'pending' THEN next_attempt_at END),
       {never}
FROM generations WHERE status IN ('pending', 'running') GROUP BY user_id
"""


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.create_table(
        "user_queues",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("pending", sa.Integer(), nullable=False),
        sa.Column("running", sa.Integer(), nullable=False),
        sa.Column("next_due_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("served_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_user_queues_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_user_queues")),
    )
    op.create_index(
        "ix_user_queues_ready",
        "user_queues",
        ["served_at", "user_id"],
        sqlite_where=sa.text("next_due_at IS NOT NULL"),
        postgresql_where=sa.text("next_due_at IS NOT NULL"),
    )
    op.create_index(
        "ix_generations_pending",
        "generations",
        ["user_id", "next_attempt_at", "id"],
        sqlite_where=_PENDING,
        postgresql_where=_PENDING,
    )
    op.drop_index("ix_generations_queue", table_name="generations")
    op.drop_index("ix_generations_running_user", table_name="generations")
    if dialect == "postgresql":
        op.execute(_BACKFILL.format(never="'epoch'::timestamptz"))
        op.execute(_POSTGRES_FUNCTION)
        for name, when in _POSTGRES_TRIGGERS.items():
            op.execute(f"CREATE TRIGGER {name} {when} EXECUTE FUNCTION user_queues_follow()")
    else:
        op.execute(_BACKFILL.format(never=_NEVER_SQLITE))
        for name, (when, body) in _SQLITE_TRIGGERS.items():
            op.execute(f"CREATE TRIGGER {name} {when} BEGIN {body} END")


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for name in _SQLITE_TRIGGERS:
        op.execute(
            f"DROP TRIGGER IF EXISTS {name} ON generations"
            if dialect == "postgresql"
            else f"DROP TRIGGER IF EXISTS {name}"
        )
    if dialect == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS user_queues_follow()")
    op.create_index(
        "ix_generations_running_user",
        "generations",
        ["user_id"],
        sqlite_where=sa.text("status = 'running'"),
        postgresql_where=sa.text("status = 'running'"),
    )
    op.create_index(
        "ix_generations_queue",
        "generations",
        ["next_attempt_at", "id"],
        sqlite_where=_PENDING,
        postgresql_where=_PENDING,
    )
    op.drop_index("ix_generations_pending", table_name="generations")
    op.drop_index("ix_user_queues_ready", table_name="user_queues")
    op.drop_table("user_queues")
