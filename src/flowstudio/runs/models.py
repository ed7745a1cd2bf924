"""Tables owned by runs: a run of a flow and the adoption state of each of its steps."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, text
from sqlalchemy.orm import Mapped, mapped_column

from flowstudio.db import Base, utcnow
from flowstudio.ids import uuid7


class Run(Base):
    __tablename__ = "runs"
    __table_args__ = (
        Index(
            "ix_runs_user_recent",
            "user_id",
            "created_at",
            "id",
            sqlite_where=text("deleted_at IS NULL"),
            postgresql_where=text("deleted_at IS NULL"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid7)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    flow_slug: Mapped[str] = mapped_column(String(64))
    # The flow as it was when the run started, so old runs stay readable after a flow changes.
    flow_snapshot: Mapped[dict[str, Any]]
    title: Mapped[str] = mapped_column(String(200))
    inputs: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    deleted_at: Mapped[datetime | None]


class RunStep(Base):
    __tablename__ = "run_steps"

    run_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True
    )
    step_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    adopted_generation_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("generations.id", ondelete="SET NULL"), index=True
    )
    # Set when an upstream change removed this step's adoption; cleared on the next adoption.
    invalidated_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
