"""The generations table: the history of every generation and, at the same time, the job queue."""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from flowstudio.db import Base, utcnow
from flowstudio.i18n.search import index_text
from flowstudio.ids import uuid7


class GenerationStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def is_terminal(self) -> bool:
        return self in (self.SUCCEEDED, self.FAILED, self.CANCELED)


TERMINAL_STATUSES = tuple(s.value for s in GenerationStatus if s.is_terminal)
_LIVE = text("deleted_at IS NULL")
_TRASHED = text("deleted_at IS NOT NULL")


def _partial(name: str, *columns: str, where: Any, unique: bool = False) -> Index:
    return Index(name, *columns, unique=unique, sqlite_where=where, postgresql_where=where)


def _search_text_of_prompt(context: Any) -> str:
    return index_text(context.get_current_parameters()["prompt"])


class Generation(Base):
    __tablename__ = "generations"
    __table_args__ = (
        CheckConstraint(
            "status IN ('pending','running','succeeded','failed','canceled')", name="status"
        ),
        CheckConstraint("source IN ('generated','upload')", name="source"),
        Index(
            "uq_generations_run_id_step_id_object_key",
            "run_id",
            "step_id",
            "object_key",
            unique=True,
        ),
        # History pages: newest first per user, optionally narrowed by flow or status.
        _partial("ix_generations_history", "user_id", "created_at", "id", where=_LIVE),
        _partial(
            "ix_generations_history_flow", "user_id", "flow_slug", "created_at", "id", where=_LIVE
        ),
        _partial(
            "ix_generations_history_status", "user_id", "status", "created_at", "id", where=_LIVE
        ),
        _partial("ix_generations_trash", "user_id", "created_at", "id", where=_TRASHED),
        _partial("ix_generations_purge", "deleted_at", where=_TRASHED),
        # A step's candidates (also serves the run_id / step_id history filters).
        Index("ix_generations_step", "run_id", "step_id", "created_at", "id"),
        Index("ix_generations_batch", "batch_id", "batch_index"),
        # The queue: a user's due rows oldest first (a claim seeks here once per user it
        # serves), and expired leases. Who has due work is kept in user_queues.
        _partial(
            "ix_generations_pending",
            "user_id",
            "next_attempt_at",
            "id",
            where=text("status = 'pending'"),
        ),
        _partial("ix_generations_leases", "lease_expires_at", where=text("status = 'running'")),
        _partial(
            "uq_generations_idempotency",
            "user_id",
            "idempotency_key",
            "batch_index",
            where=text("idempotency_key IS NOT NULL"),
            unique=True,
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid7)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    step_id: Mapped[str] = mapped_column(String(64))
    flow_slug: Mapped[str] = mapped_column(String(64))
    batch_id: Mapped[uuid.UUID]
    batch_index: Mapped[int] = mapped_column(default=0)
    source: Mapped[str] = mapped_column(String(16), default="generated")
    status: Mapped[str] = mapped_column(String(16), default=GenerationStatus.PENDING.value)
    prompt: Mapped[str] = mapped_column(Text)
    # What search reads (flowstudio.i18n.search): the prompt folded and cut into tokens,
    # written with the row from its prompt unless given (migration 0009).
    search_text: Mapped[str] = mapped_column(
        Text, default=_search_text_of_prompt, server_default=""
    )
    params: Mapped[dict[str, Any]]  # size, options, input generation ids
    temperature: Mapped[float | None]
    seed: Mapped[int | None] = mapped_column(BigInteger)
    provider: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(128))
    provider_request_id: Mapped[str | None] = mapped_column(String(255))
    object_key: Mapped[str | None] = mapped_column(String(1024))
    thumbnail_key: Mapped[str | None] = mapped_column(String(1024))
    mime: Mapped[str | None] = mapped_column(String(64))
    width: Mapped[int | None]
    height: Mapped[int | None]
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64))
    output: Mapped[dict[str, Any]] = mapped_column(default=dict)  # provider metadata, timings
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(default=0)
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None]
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    deleted_at: Mapped[datetime | None]


# Sorts before any real claim time: a user never served comes first.
NEVER_SERVED = datetime(1970, 1, 1, tzinfo=UTC)


class UserQueue(Base):
    """One user's place in the generation queue, kept in step with `generations` by database
    triggers (migration 0005) whatever path changes a row: how many rows of the user are
    pending and running, when the earliest pending one is due, and when the user was last
    served. A claim walks the users with due work in the order they were last served
    (round-robin) and takes each one's oldest due row through `ix_generations_pending`, so
    it reads about as many index entries as it claims, however deep the queue."""

    __tablename__ = "user_queues"
    __table_args__ = (
        Index(
            "ix_user_queues_ready",
            "served_at",
            "user_id",
            sqlite_where=text("next_due_at IS NOT NULL"),
            postgresql_where=text("next_due_at IS NOT NULL"),
        ),
    )

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    pending: Mapped[int] = mapped_column(default=0)
    running: Mapped[int] = mapped_column(default=0)
    next_due_at: Mapped[datetime | None]  # NULL: nothing pending
    served_at: Mapped[datetime] = mapped_column(default=NEVER_SERVED)
    # Never anything but 0 in a stored row: a generate that took the user past the queue's
    # limit sets it last in its unit, and the CHECK undoes the whole unit (migration 0008).
    refused: Mapped[int] = mapped_column(
        CheckConstraint("refused = 0", name="admission"), default=0, server_default="0"
    )


class ObjectDeletion(Base):
    """A stored object that must go: its generation was purged (or its attempt was thrown
    away), but the store refused the delete. `gc` deletes these first, without the orphan
    sweep's grace period, and forgets each key once the store has let it go."""

    __tablename__ = "object_deletions"

    key: Mapped[str] = mapped_column(String(1024), primary_key=True)
    recorded_at: Mapped[datetime] = mapped_column(default=utcnow)
