"""Garbage collection and consistency: trash purge, retention, orphan objects, missing objects,
and (SQLite) merging the full-text index.

Run by `flowstudio gc [--dry-run]` and periodically by workers. A purged row goes with its
objects; keys the store refused to delete are recorded and deleted first by the next run, with
no grace. Adopted candidates and unfinished work are never touched by retention.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import delete as sa_delete
from sqlalchemy import exists, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from flowstudio.auth import repository as auth_repository
from flowstudio.context import AppContext
from flowstudio.db import utcnow
from flowstudio.generations import repository
from flowstudio.generations.history import purge_rows
from flowstudio.generations.models import TERMINAL_STATUSES, Generation
from flowstudio.runs.models import Run, RunStep
from flowstudio.storage import ObjectInfo, StorageError

log = logging.getLogger("flowstudio.gc")

BATCH = 500
ORPHAN_GRACE = timedelta(hours=1)
_LOCK_ID = 0x466C6F77  # PostgreSQL advisory lock: one collector at a time across processes

Progress = Callable[[str, int, int | None], None]  # (phase, advanced by, total or None)


@dataclass
class GcReport:
    dry_run: bool
    trash_purged: int = 0
    runs_purged: int = 0
    retention_trashed: int = 0
    objects_scanned: int = 0
    orphans_deleted: int = 0
    sessions_deleted: int = 0  # expired browser sessions
    recorded_deleted: int = 0  # objects of purged rows the store had refused to delete
    orphan_keys: list[str] = field(default_factory=list)
    missing_objects: list[uuid.UUID] = field(default_factory=list)
    delete_failures: int = 0
    search_index_merges: int = 0  # SQLite: merge steps of the full-text index
    seconds: float = 0.0
    skipped: bool = False  # another collector held the lock
    # A round with a deadline stops between batches once it has passed, and says where to
    # resume; None when the collection ran to its end.
    deadline: float | None = None
    resume: GcResume | None = None
    swept_through: str | None = None  # the sweep settled every key up to here

    def check_time(self) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise _OutOfTime


@dataclass(frozen=True)
class GcResume:
    """Where an unfinished collection goes on: the phase it stopped in, and for the orphan
    sweep the key it had settled every user up to."""

    phase: int
    swept_through: str | None = None


class _OutOfTime(Exception):
    pass


def _no_progress(_phase: str, _advance: int, _total: int | None) -> None:
    return None


def _not_adopted() -> object:
    return ~exists().where(RunStep.adopted_generation_id == Generation.id)


async def _expired_trash(
    db: AsyncSession, *, before: datetime, after_id: uuid.UUID | None, limit: int
) -> list[Generation]:
    query = select(Generation).where(
        Generation.deleted_at.is_not(None), Generation.deleted_at < before
    )
    if after_id is not None:
        query = query.where(Generation.id > after_id)
    return list(await db.scalars(query.order_by(Generation.id).limit(limit)))


async def _purge_empty_deleted_runs(ctx: AppContext, report: GcReport, before: datetime) -> None:
    """Deleted runs go for good once their trash period is over and no generation is left."""
    async with ctx.sessions() as db:
        empty = select(Run.id).where(
            Run.deleted_at.is_not(None),
            Run.deleted_at < before,
            ~exists().where(Generation.run_id == Run.id),
        )
        ids = list(await db.scalars(empty))
        if ids and not report.dry_run:
            await db.execute(sa_delete(Run).where(Run.id.in_(ids)))
            await db.commit()
        report.runs_purged += len(ids)


async def delete_expired_sessions(ctx: AppContext, report: GcReport) -> None:
    """Signed-out-by-time browser sessions: their rows would otherwise stay for good."""
    async with ctx.sessions() as db:
        if report.dry_run:
            report.sessions_deleted = await auth_repository.count_expired_sessions(db, utcnow())
            return
        report.sessions_deleted = await auth_repository.delete_expired_sessions(db, utcnow())
        await db.commit()


async def delete_recorded_objects(ctx: AppContext, report: GcReport, progress: Progress) -> None:
    """Objects whose rows are gone but which the store refused to delete at the time: deleted
    now, with no grace (nothing will ever reference them), and forgotten once gone."""
    seen: set[str] = set()
    while True:
        async with ctx.sessions() as db:
            keys = [
                k
                for k in await repository.recorded_object_deletions(db, limit=BATCH)
                if k not in seen
            ]
            if not keys:
                return
            seen.update(keys)
            if report.dry_run:
                report.recorded_deleted += len(keys)
                continue
            try:
                refused = set(await ctx.store.delete_many(keys))
            except StorageError as exc:
                log.warning("gc: the store refused recorded deletions again: %s", exc)
                return
            gone = [k for k in keys if k not in refused]
            await repository.forget_object_deletions(db, gone)
            await db.commit()
        report.recorded_deleted += len(gone)
        report.delete_failures += len(refused)
        progress("recorded deletions", len(keys), None)
        report.check_time()


async def purge_expired_trash(ctx: AppContext, report: GcReport, progress: Progress) -> None:
    before = utcnow() - timedelta(days=ctx.settings.trash_days)
    after_id = None
    while True:
        async with ctx.sessions() as db:
            batch = await _expired_trash(db, before=before, after_id=after_id, limit=BATCH)
            if not batch:
                break
            after_id = batch[-1].id
            if report.dry_run:
                report.trash_purged += len(batch)
            else:
                refused = await purge_rows(db, store=ctx.store, generations=batch)
                await db.commit()
                report.trash_purged += len(batch)
                report.delete_failures += len(refused)
            progress("trash", len(batch), None)
        report.check_time()
    # Outside the loop's session: SQLite allows one writer, and that session holds the lock.
    await _purge_empty_deleted_runs(ctx, report, before)


async def apply_retention(ctx: AppContext, report: GcReport, progress: Progress) -> None:
    settings = ctx.settings
    now = utcnow()
    conditions = [
        Generation.deleted_at.is_(None),
        Generation.status.in_(TERMINAL_STATUSES),
        _not_adopted(),
    ]
    candidates = []
    async with ctx.sessions() as db:
        if settings.max_age_days:
            old = select(Generation.id).where(
                *conditions, Generation.created_at < now - timedelta(days=settings.max_age_days)
            )
            candidates.extend(await db.scalars(old))
        if settings.keep_last_per_step:
            ranked = (
                select(
                    Generation.id.label("id"),
                    func.row_number()
                    .over(
                        partition_by=(Generation.run_id, Generation.step_id),
                        order_by=(Generation.created_at.desc(), Generation.id.desc()),
                    )
                    .label("rank"),
                )
                .where(*conditions)
                .subquery()
            )
            beyond = select(ranked.c.id).where(ranked.c.rank > settings.keep_last_per_step)
            candidates.extend(await db.scalars(beyond))
    ids = list(dict.fromkeys(candidates))
    if report.dry_run:
        report.retention_trashed = len(ids)
        return
    for start in range(0, len(ids), BATCH):
        report.check_time()
        chunk = ids[start : start + BATCH]
        async with ctx.sessions() as db:
            rows = await repository.get_by_ids(db, chunk)
            for generation in rows:
                # Re-checked inside the transaction: it may have been adopted meanwhile.
                adopted = await db.scalar(
                    select(func.count()).where(RunStep.adopted_generation_id == generation.id)
                )
                if adopted or generation.deleted_at is not None:
                    continue
                generation.deleted_at = now
                generation.updated_at = now
                report.retention_trashed += 1
            await db.commit()
        progress("retention", len(chunk), len(ids))


async def _referenced_keys(db: AsyncSession, user_id: str) -> dict[str, tuple[uuid.UUID, str]]:
    """Every key a row of this user references → (generation id, status)."""
    try:
        uid = uuid.UUID(user_id)
    except ValueError:
        return {}
    rows = await db.execute(
        select(
            Generation.id, Generation.status, Generation.object_key, Generation.thumbnail_key
        ).where(Generation.user_id == uid, Generation.object_key.is_not(None))
    )
    keys: dict[str, tuple[uuid.UUID, str]] = {}
    for gid, status, object_key, thumb in rows:
        keys[object_key] = (gid, status)
        if thumb:
            keys[thumb] = (gid, status)
    return keys


async def sweep_objects(
    ctx: AppContext,
    report: GcReport,
    progress: Progress,
    *,
    grace: timedelta = ORPHAN_GRACE,
    start_after: str | None = None,
) -> None:
    """One pass over the store, user by user: delete orphans, report rows whose object is gone.

    With a deadline it stops after a user once the deadline has passed (having settled at
    least one, so a round always makes progress), and `report.swept_through` says where the
    next round lists from (`start_after`)."""
    now = utcnow()
    seen_users: set[str] = set()
    current_user: str | None = None
    listed: list[ObjectInfo] = []

    async def settle(user: str, infos: list[ObjectInfo]) -> None:
        async with ctx.sessions() as db:
            referenced = await _referenced_keys(db, user)
        present = {info.key for info in infos}
        orphans = [
            info.key
            for info in infos
            if info.key not in referenced
            and (info.last_modified is None or now - info.last_modified > grace)
        ]
        for key, (gid, status) in referenced.items():
            if status == "succeeded" and key not in present and not key.endswith(".thumb.webp"):
                report.missing_objects.append(gid)
        report.orphan_keys.extend(orphans)
        if orphans and not report.dry_run:
            failed = await ctx.store.delete_many(orphans)
            report.orphans_deleted += len(orphans) - len(failed)
            report.delete_failures += len(failed)
        # Every key of this user sorts before "u/<user>0" ('0' follows '/'), and every key of
        # the next user after it.
        report.swept_through = f"u/{user}0"
        report.check_time()

    async for info in ctx.store.list_prefix("u/", start_after=start_after):
        report.objects_scanned += 1
        parts = info.key.split("/")
        user = parts[1] if len(parts) > 2 else ""
        if user != current_user:
            if current_user is not None:
                await settle(current_user, listed)
            current_user, listed = user, []
            seen_users.add(user)
        listed.append(info)
        if report.objects_scanned % 1000 == 0:
            progress("objects", 1000, None)
    if current_user is not None:
        await settle(current_user, listed)
    progress("objects", report.objects_scanned % 1000, None)
    report.swept_through = None
    if start_after is not None:
        return  # users settled in earlier rounds were not seen in this one

    # Users with rows but not a single object in the store.
    async with ctx.sessions() as db:
        users = await db.scalars(
            select(Generation.user_id)
            .where(Generation.status == "succeeded", Generation.object_key.is_not(None))
            .distinct()
        )
        unseen = [u for u in users if str(u) not in seen_users]
        if unseen:
            rows = await db.scalars(
                select(Generation.id).where(
                    Generation.user_id.in_(unseen),
                    Generation.status == "succeeded",
                    Generation.object_key.is_not(None),
                )
            )
            report.missing_objects.extend(rows)


# Pages of the full-text index merged per write transaction. 500 held SQLite's write lock for
# up to 150 ms on 2 cores (1M rows); 200 keeps a step near 60 ms, after which requests and the
# worker get their turn.
SEARCH_MERGE_PAGES = 200


async def compact_search_index(ctx: AppContext, report: GcReport, progress: Progress) -> None:
    """SQLite: merge the full-text index into one segment, in short steps (see
    repository.merge_search_index). PostgreSQL's GIN index needs nothing of the kind."""
    if not ctx.settings.is_sqlite or report.dry_run:
        return
    if await ctx.reads.run(repository.search_index_segments) <= 1:
        return
    while True:
        async with ctx.sessions() as db:
            merged = await db.run_sync(
                lambda s: repository.merge_search_index(s.connection(), pages=SEARCH_MERGE_PAGES)
            )
            await db.commit()
        if not merged:
            return
        report.search_index_merges += 1
        progress("search index merge steps", 1, None)
        report.check_time()
        await asyncio.sleep(0.01)


async def collect_garbage(
    ctx: AppContext,
    *,
    dry_run: bool = False,
    progress: Progress = _no_progress,
    sweep: bool = True,
    orphan_grace: timedelta = ORPHAN_GRACE,
    seconds: float | None = None,
    resume: GcResume | None = None,
) -> GcReport:
    """Collect garbage: expired sessions, recorded deletions, expired trash, retention, the
    orphan sweep and (SQLite) the search index merge, in that order.

    With `seconds`, the collection stops between batches once that time has passed and
    `report.resume` says where to go on; pass it back as `resume` (each phase makes progress
    by what it deletes, and the sweep lists on from the last user it settled)."""
    report = GcReport(dry_run=dry_run)
    if seconds is not None:
        report.deadline = time.monotonic() + seconds
    started = time.perf_counter()
    postgres = ctx.engine.dialect.name == "postgresql"
    lock_connection = None
    if postgres:
        lock_connection = await ctx.engine.connect()
        got = await lock_connection.scalar(text(f"SELECT pg_try_advisory_lock({_LOCK_ID})"))
        if not got:
            await lock_connection.close()
            report.skipped = True
            return report
    start_after = resume.swept_through if resume is not None else None

    async def sweep_phase() -> None:
        if sweep:
            await sweep_objects(ctx, report, progress, grace=orphan_grace, start_after=start_after)

    phases = [
        lambda: delete_expired_sessions(ctx, report),
        lambda: delete_recorded_objects(ctx, report, progress),
        lambda: purge_expired_trash(ctx, report, progress),
        lambda: apply_retention(ctx, report, progress),
        sweep_phase,
        lambda: compact_search_index(ctx, report, progress),
    ]
    try:
        for index in range(resume.phase if resume is not None else 0, len(phases)):
            try:
                await phases[index]()
            except _OutOfTime:
                report.resume = GcResume(index, report.swept_through or start_after)
                break
            start_after = None  # a resumed sweep resumes once
    finally:
        if lock_connection is not None:
            await lock_connection.execute(text(f"SELECT pg_advisory_unlock({_LOCK_ID})"))
            await lock_connection.close()
    report.seconds = round(time.perf_counter() - started, 3)
    return report


class PeriodicCollector:
    """Called often by the worker's maintenance task; collects at most once per interval, in
    rounds of at most `round_seconds`: a collection that needs longer (a large bucket's
    sweep) goes on where it stopped at the next call, until it is done."""

    ROUND_SECONDS = 10.0

    def __init__(
        self,
        ctx: AppContext,
        *,
        interval: timedelta,
        round_seconds: float = ROUND_SECONDS,
        orphan_grace: timedelta = ORPHAN_GRACE,
    ) -> None:
        self.ctx = ctx
        self.interval = interval.total_seconds()
        self.round_seconds = round_seconds
        self.orphan_grace = orphan_grace
        self._last = time.monotonic()
        self._resume: GcResume | None = None

    async def __call__(self) -> None:
        if self._resume is None:
            if time.monotonic() - self._last < self.interval:
                return
            self._last = time.monotonic()
        report = await collect_garbage(
            self.ctx,
            seconds=self.round_seconds,
            resume=self._resume,
            orphan_grace=self.orphan_grace,
        )
        if not report.skipped:
            self._resume = report.resume
        if report.trash_purged or report.retention_trashed or report.orphans_deleted:
            log.info(
                "gc: purged %d from trash, trashed %d by retention, deleted %d orphans",
                report.trash_purged,
                report.retention_trashed,
                report.orphans_deleted,
            )
        if report.missing_objects:
            log.warning(
                "gc: %d generation(s) have no object in storage", len(report.missing_objects)
            )
