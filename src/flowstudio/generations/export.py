"""Exporting a user's history (or one run) as a zip: the images plus JSON metadata."""

from __future__ import annotations

import json
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select, tuple_

from flowstudio.auth import repository as auth_repository
from flowstudio.context import AppContext
from flowstudio.errors import NotFound
from flowstudio.generations import history, repository
from flowstudio.generations.models import Generation
from flowstudio.imaging import extension_for
from flowstudio.storage import StorageError

BATCH = 200


@dataclass
class ExportSummary:
    path: Path
    generations: int = 0
    images: int = 0
    missing_images: int = 0


async def export_history(
    ctx: AppContext,
    *,
    email: str,
    output: Path,
    run_id: uuid.UUID | None = None,
    include_deleted: bool = False,
    progress: Callable[[int, int], None] = lambda _a, _t: None,
) -> ExportSummary:
    async with ctx.sessions() as db:
        user = await auth_repository.get_user_by_email(db, email.strip().lower())
        if user is None:
            raise NotFound(f"No user with the email {email}.")
        conditions = [Generation.user_id == user.id]
        if run_id is not None:
            conditions.append(Generation.run_id == run_id)
        if not include_deleted:
            conditions.append(Generation.deleted_at.is_(None))
        total = await db.scalar(select(func.count()).select_from(Generation).where(*conditions))
    if run_id is not None and total == 0:
        raise NotFound("That run has no generations of this user.")
    summary = ExportSummary(path=output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".partial")
    items = []
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        after = None
        while True:
            async with ctx.sessions() as db:
                query = select(Generation).where(*conditions)
                if after is not None:
                    query = query.where(tuple_(Generation.created_at, Generation.id) > after)
                query = query.order_by(Generation.created_at, Generation.id).limit(BATCH)
                rows = list(await db.scalars(query))
                if not rows:
                    break
                ids = [g.id for g in rows]
                described = await history.describe(
                    db,
                    await repository.get_many_with_adoption(db, ids),
                    trash_days=ctx.settings.trash_days,
                )
            after = (rows[-1].created_at, rows[-1].id)
            for generation, item in zip(rows, described, strict=True):
                record = item.model_dump(mode="json")
                if generation.object_key and generation.status == "succeeded":
                    name = (
                        f"images/{generation.run_id}/{generation.step_id}/"
                        f"{generation.id}.{extension_for(generation.mime)}"
                    )
                    try:
                        data = await ctx.store.get(generation.object_key)
                    except StorageError:
                        summary.missing_images += 1
                        record["file"] = None
                    else:
                        # Images are already compressed: store them as they are.
                        archive.writestr(name, data, compress_type=zipfile.ZIP_STORED)
                        record["file"] = name
                        summary.images += 1
                items.append(record)
                summary.generations += 1
            progress(len(rows), total or 0)
        archive.writestr(
            "metadata.json",
            json.dumps(
                {
                    "user": user.email,
                    "run_id": str(run_id) if run_id else None,
                    "generations": items,
                },
                indent=2,
            ),
        )
    tmp.replace(output)
    return summary
