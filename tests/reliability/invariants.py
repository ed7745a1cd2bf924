"""What must hold after any crash or fault: read straight from the database and the object store.

- every generation is terminal (none stuck `pending` / `running`);
- a succeeded row points at its image and thumbnail, both present; a failed or canceled row
  points at nothing;
- no object key is referenced by two rows;
- no object in the store without a row (the `flowstudio gc` sweep, as a dry run with no grace
  period, finds no orphan and no missing image).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import func, select

from flowstudio.app import open_context
from flowstudio.config import Settings
from flowstudio.db import create_engine
from flowstudio.generations.maintenance import collect_garbage
from flowstudio.generations.models import TERMINAL_STATUSES, Generation


@dataclass
class Consistency:
    total: int = 0
    by_status: Counter[str] = field(default_factory=Counter)
    error_codes: Counter[str] = field(default_factory=Counter)
    not_terminal: list[str] = field(default_factory=list)
    keys_referenced_twice: list[str] = field(default_factory=list)
    failed_with_object: list[str] = field(default_factory=list)
    succeeded_without_object: list[str] = field(default_factory=list)
    orphan_objects: list[str] = field(default_factory=list)
    missing_objects: list[str] = field(default_factory=list)
    objects_scanned: int = 0
    ids: set[str] = field(default_factory=set)

    def problems(self) -> dict[str, list[str]]:
        found = {
            "not terminal": self.not_terminal,
            "object key referenced twice": self.keys_referenced_twice,
            "failed/canceled row with an object key": self.failed_with_object,
            "succeeded row without an object key": self.succeeded_without_object,
            "orphan objects (no row)": self.orphan_objects,
            "rows whose object is missing": self.missing_objects,
        }
        return {name: items[:10] for name, items in found.items() if items}

    def assert_consistent(self) -> None:
        assert not self.problems(), f"inconsistent after {self.by_status}: {self.problems()}"


async def check(settings: Settings) -> Consistency:
    report = Consistency()
    async with open_context(settings, migrate_sqlite=False) as ctx:
        async with ctx.sessions() as db:
            rows = list(await db.scalars(select(Generation)))
        keys: Counter[str] = Counter()
        for g in rows:
            report.total += 1
            report.ids.add(str(g.id))
            report.by_status[g.status] += 1
            if g.error_code:
                report.error_codes[g.error_code] += 1
            if g.status not in TERMINAL_STATUSES:
                report.not_terminal.append(f"{g.id} {g.status}")
            if g.status == "succeeded" and not (g.object_key and g.thumbnail_key):
                report.succeeded_without_object.append(str(g.id))
            if g.status in ("failed", "canceled") and (g.object_key or g.thumbnail_key):
                report.failed_with_object.append(str(g.id))
            for key in (g.object_key, g.thumbnail_key):
                if key:
                    keys[key] += 1
        report.keys_referenced_twice = [k for k, n in keys.items() if n > 1]
        gc = await collect_garbage(ctx, dry_run=True, orphan_grace=timedelta(0))
        report.objects_scanned = gc.objects_scanned
        report.orphan_objects = list(gc.orphan_keys)
        report.missing_objects = [str(g) for g in gc.missing_objects]
        # A thumbnail is an object too: missing_objects only names rows whose image is gone.
        present = set()
        async for info in ctx.store.list_prefix("u/"):
            present.add(info.key)
        for g in rows:
            if g.status == "succeeded" and g.thumbnail_key and g.thumbnail_key not in present:
                report.missing_objects.append(f"{g.id} (thumbnail)")
    return report


async def unfinished(settings: Settings) -> int:
    engine = create_engine(settings.resolved_database_url)
    try:
        async with engine.connect() as connection:
            return await connection.scalar(
                select(func.count())
                .select_from(Generation)
                .where(Generation.status.not_in(TERMINAL_STATUSES))
            )
    finally:
        await engine.dispose()


async def settled(settings: Settings, *, timeout: float = 120.0) -> Consistency:
    """Wait until every generation is terminal (leases expire, workers retry), then check."""
    deadline = time.monotonic() + timeout
    while await unfinished(settings) and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.25)
    return await check(settings)
