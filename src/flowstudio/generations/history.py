"""The history: every generation a user made — listing, context, delete/restore/purge."""

from __future__ import annotations

import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from flowstudio.auth.models import User
from flowstudio.db import Reads, utcnow
from flowstudio.errors import NotFound
from flowstudio.generations import history_json, repository
from flowstudio.generations.events import EventBus
from flowstudio.generations.models import Generation, GenerationStatus
from flowstudio.generations.repository import HistoryFilters
from flowstudio.generations.schemas import HistoryItem, to_read
from flowstudio.generations.service import discard_objects, record_change
from flowstudio.pagination import CursorCodec
from flowstudio.runs import repository as runs_repository
from flowstudio.runs import service as runs_service
from flowstudio.runs.models import Run
from flowstudio.storage import ObjectStore

NOT_FOUND = "No such generation."


async def describe(
    db: AsyncSession, rows: Sequence[tuple[Generation, bool]], *, trash_days: int
) -> list[HistoryItem]:
    """History items with their run and step context, in one extra query."""
    context = await run_context(db, [g.run_id for g, _ in rows])
    items = []
    for generation, adopted in rows:
        title, flow_title, step_titles = context.get(generation.run_id, (None, None, {}))
        items.append(
            to_read(
                generation,
                adopted=adopted,
                model=HistoryItem,
                run_title=title,
                step_title=step_titles.get(generation.step_id),
                flow_title=flow_title,
                purge_after=purge_after(generation.deleted_at, trash_days),
            )
        )
    return items


# Run titles and flow snapshots never change after a run starts, so their context is cached:
# at most this many runs, the oldest entry evicted first (first in, first out).
_RUN_CONTEXT: OrderedDict[uuid.UUID, tuple[str, str | None, dict[str, str]]] = OrderedDict()
_RUN_CONTEXT_SIZE = 4096


async def run_context(
    db: AsyncSession | Reads, run_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, tuple[str, str | None, dict[str, str]]]:
    """(run title, flow title, step titles) of each run."""
    wanted = set(run_ids)
    found = {run_id: _RUN_CONTEXT[run_id] for run_id in wanted if run_id in _RUN_CONTEXT}
    missing = wanted - found.keys()
    if missing:
        if isinstance(db, Reads):
            loaded = await db.run(repository.run_context, missing)
        else:
            loaded = await db.run_sync(lambda s: repository.run_context(s.connection(), missing))
        for run_id, (title, snapshot) in loaded.items():
            steps = {s.get("id"): s.get("title") or s.get("id") for s in snapshot.get("steps", [])}
            found[run_id] = _RUN_CONTEXT[run_id] = (title, snapshot.get("title"), steps)
            if len(_RUN_CONTEXT) > _RUN_CONTEXT_SIZE:
                _RUN_CONTEXT.popitem(last=False)
    return found


def purge_after(deleted_at: datetime | None, trash_days: int) -> datetime | None:
    return deleted_at + timedelta(days=trash_days) if deleted_at else None


async def list_history(
    reads: Reads,
    *,
    user: User,
    codec: CursorCodec,
    filters: HistoryFilters,
    cursor: str | None,
    limit: int,
    trash_days: int,
) -> bytes:
    """One page of the user's history as the JSON body of `HistoryList` (see history_json)."""
    scope = "trash" if filters.deleted else "history"
    after = codec.decode(cursor, scope=scope) if cursor else None
    rows = await reads.run(
        repository.history_rows, user_id=user.id, filters=filters, after=after, limit=limit + 1
    )
    values = history_json.row_values(reads.dialect)
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = codec.encode(history_json.position(rows[-1], values), scope=scope)
    context = await run_context(reads, history_json.run_ids(rows, values))
    return history_json.render_page(
        rows, values=values, context=context, trash_days=trash_days, next_cursor=next_cursor
    )


async def get_item(
    db: AsyncSession, *, user: User, generation_id: uuid.UUID, trash_days: int
) -> HistoryItem:
    found = await repository.get_owned(
        db, user_id=user.id, generation_id=generation_id, include_deleted=True
    )
    if found is None:
        raise NotFound(NOT_FOUND)
    return (await describe(db, [found], trash_days=trash_days))[0]


@dataclass(frozen=True)
class Deleted:
    generation: Generation
    invalidated_steps: list[str]
    purged: bool


async def _owned_runs(db: AsyncSession, generations: Sequence[Generation]) -> dict:
    runs = {}
    for run_id in {g.run_id for g in generations}:
        run = await db.get(Run, run_id)
        if run is not None:
            runs[run_id] = run
    return runs


async def delete_generations(
    db: AsyncSession,
    *,
    bus: EventBus,
    store: ObjectStore,
    user: User,
    ids: Sequence[uuid.UUID],
    purge: bool,
) -> tuple[list[Deleted], list[uuid.UUID]]:
    """Soft-delete (or purge) the user's generations among `ids`; the rest are not found.

    Deleting an adopted candidate clears that adoption and invalidates the steps downstream.
    Purging removes the objects first and the row only once they are gone.
    """
    unique_ids = list(dict.fromkeys(ids))
    found = await repository.owned_by_ids(
        db, user_id=user.id, ids=unique_ids, include_deleted=purge
    )
    found_ids = {g.id for g in found}
    not_found = [i for i in unique_ids if i not in found_ids]
    runs = await _owned_runs(db, found)
    released = await runs_service.release_adoptions_of(
        db, generation_ids=[g.id for g in found], runs=runs, bus=bus
    )
    now = utcnow()
    results = []
    if purge:
        await purge_rows(db, store=store, generations=found)
        results = [Deleted(g, released.get(g.id, []), True) for g in found]
        return results, not_found
    for generation in found:
        values: dict[str, Any] = {"deleted_at": now}
        if generation.status == GenerationStatus.PENDING.value:
            values.update(status=GenerationStatus.CANCELED.value, finished_at=now)
        await record_change(db, bus, generation, values)
        results.append(Deleted(generation, released.get(generation.id, []), False))
    return results, not_found


async def purge_rows(
    db: AsyncSession, *, store: ObjectStore, generations: Sequence[Generation]
) -> list[str]:
    """Purge for good: the rows go, then their objects. A row that is still being made goes
    too; its worker finds it gone and deletes what it wrote. Keys the store refuses are
    recorded for the next gc. Returns the refused keys."""
    keys = await repository.delete_rows(db, [g.id for g in generations])
    return await discard_objects(db, store=store, keys=keys)


async def restore_generation(
    db: AsyncSession, *, bus: EventBus, user: User, generation_id: uuid.UUID, trash_days: int
) -> HistoryItem:
    found = await repository.get_owned(
        db, user_id=user.id, generation_id=generation_id, include_deleted=True
    )
    if found is None:
        raise NotFound(NOT_FOUND)
    generation, _ = found
    if generation.deleted_at is not None:
        await record_change(db, bus, generation, {"deleted_at": None})
        run = await db.get(Run, generation.run_id)
        if run is not None and run.deleted_at is not None:
            run.deleted_at = None  # restoring a generation of a deleted run brings the run back
            await runs_repository.touch_run(db, run.id, utcnow())
    return await get_item(db, user=user, generation_id=generation_id, trash_days=trash_days)
