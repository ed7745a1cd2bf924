"""The generation state machine: requesting candidates, uploads, and every status change.

pending ──claim──▶ running ──▶ succeeded
   ▲                  │   └──▶ failed (normalised code)
   └── retryable ─────┘        canceled (deleted before it ran)

Every change goes through `record_change`, which also emits the `generation` event in the same
transaction.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from flowstudio.auth.models import User
from flowstudio.db import utcnow
from flowstudio.errors import (
    Conflict,
    NotFound,
    PayloadTooLarge,
    QueueFull,
    StepNotReady,
    UnsupportedMedia,
    ValidationFailed,
)
from flowstudio.flows import PromptRenderError, render_prompt
from flowstudio.generations import repository
from flowstudio.generations.events import Event, EventBus
from flowstudio.generations.models import Generation, GenerationStatus
from flowstudio.generations.schemas import GenerateBody, to_read
from flowstudio.ids import uuid7
from flowstudio.imaging import UnsupportedImage, process_image
from flowstudio.pagination import CursorCodec, Position
from flowstudio.runs import service as runs_service
from flowstudio.storage import ObjectStore, StorageError
from flowstudio.storage.keys import thumbnail_key, upload_object_key

log = logging.getLogger("flowstudio.generations")

MAX_UPLOAD_BYTES = 25 * 1024 * 1024
MAX_SEED = 2**31 - 1
STATUSES = tuple(s.value for s in GenerationStatus)


class IdempotencyConflict(Conflict):
    code = "idempotency_key_reused"
    title = "This Idempotency-Key was used for another request"


def _status_event(generation: Generation) -> Event:
    """The `generation` event of a status change: the generation as the API shows it. It says
    `adopted: false` whatever the step's adoption: adoption changes have their own `adoption`
    event, on which pages reload the run."""
    return Event.of(
        "generation",
        to_read(generation, adopted=False),
        run_id=generation.run_id,
        user_id=generation.user_id,
        status=generation.status,
    )


async def record_change(
    db: AsyncSession, bus: EventBus, generation: Generation, values: dict[str, Any]
) -> None:
    values.setdefault("updated_at", utcnow())
    await repository.update_row(db, generation, values)
    await bus.emit(db, _status_event(generation))


# -- requesting --------------------------------------------------------------------------------


async def request_generations(
    db: AsyncSession,
    *,
    bus: EventBus,
    user: User,
    run_id: uuid.UUID,
    step_id: str,
    body: GenerateBody,
    idempotency_key: str | None,
    max_pending: int = 0,
) -> list[tuple[Generation, bool]]:
    """Insert `count` pending rows (one batch) in the caller's transaction; answer them, each
    with whether it is adopted.

    `max_pending` (0 = unlimited) bounds how many of the user's generations may wait in the
    queue: a request that would pass it is refused whole (QueueFull) and queues nothing."""
    if idempotency_key is not None:
        idempotency_key = idempotency_key.strip()
        if not 1 <= len(idempotency_key) <= 255:
            raise ValidationFailed("Idempotency-Key must be 1 to 255 characters.")
        existing = await repository.by_idempotency_key(db, user_id=user.id, key=idempotency_key)
        if existing:
            return await _same_request(db, existing, run_id, step_id)

    run, pending = await repository.run_and_pending(
        db, user_id=user.id, run_id=run_id, count_pending=bool(max_pending)
    )
    if run is None:
        raise NotFound(runs_service.RUN_NOT_FOUND)
    step = runs_service.step_of(run, step_id)
    adopted = await runs_service.adopted_generations(db, run)
    waiting = [s for s in step.inputs if s not in adopted]
    if waiting:
        raise StepNotReady(
            f"Adopt a candidate of {', '.join(waiting)} first; this step takes its image.",
            waiting_for=waiting,
        )
    if body.prompt is not None:
        prompt = body.prompt.strip()
    else:
        try:
            prompt = render_prompt(
                step,
                inputs=run.inputs,
                upstream_prompts={s: g.prompt for s, g in adopted.items()},
            )
        except PromptRenderError as exc:
            raise StepNotReady(f"{exc}; adopt a candidate of that step first.") from None
    if not prompt:
        raise ValidationFailed("The prompt is empty; fill in the run inputs or send a prompt.")
    inputs = [
        {
            "step_id": s,
            "generation_id": str(adopted[s].id),
            "object_key": adopted[s].object_key,
            "mime": adopted[s].mime,
        }
        for s in step.image_inputs
    ]
    if max_pending and pending + body.count > max_pending:
        raise _queue_full(pending, max_pending)
    temperature = body.temperature if body.temperature is not None else step.temperature
    base_seed = body.seed if body.seed is not None else step.seed
    batch_id = uuid7()
    now = utcnow()
    rows = []
    for index in range(body.count):
        seed = (base_seed + index) if base_seed is not None else random.randint(0, MAX_SEED)
        rows.append(
            Generation(
                id=uuid7(),
                user_id=user.id,
                run_id=run.id,
                step_id=step.id,
                flow_slug=run.flow_slug,
                batch_id=batch_id,
                batch_index=index,
                source="generated",
                status=GenerationStatus.PENDING.value,
                prompt=prompt,
                params={
                    "width": step.width,
                    "height": step.height,
                    "kind": str(step.kind),
                    "options": dict(step.options),
                    "inputs": inputs,
                },
                temperature=temperature,
                seed=seed,
                provider=step.provider,
                model=step.model,
                idempotency_key=idempotency_key,
                next_attempt_at=now,
                created_at=now,
                updated_at=now,
                output={},
            )
        )
    # One unit, no savepoint: the rows, their events, the run's `updated_at` and the admission
    # check, then the read of the answer (on D1 all of it is one batch). Whatever refuses the
    # unit (the queue's limit, or a concurrent request with the same Idempotency-Key that won
    # the race) undoes all of it.
    try:
        db.add_all(rows)
        await db.flush()
        for generation in rows:
            await bus.emit(db, _status_event(generation))
        await runs_service.repository.touch_run(db, run.id, now)
        if max_pending:
            # The read above can race with this user's other requests; this cannot.
            await repository.admit(db, user_id=user.id, limit=max_pending)
        return await repository.get_many_with_adoption(db, [g.id for g in rows])
    except IntegrityError as exc:
        refused = repository.refused_admission(exc)
        if not refused and idempotency_key is None:
            raise
        await db.rollback()
        if not refused:
            # Another request with this Idempotency-Key won the race: answer with its rows.
            existing = await repository.by_idempotency_key(db, user_id=user.id, key=idempotency_key)
            if not existing:
                raise
            return await _same_request(db, existing, run_id, step_id)
    _, pending = await repository.run_and_pending(
        db, user_id=user.id, run_id=run_id, count_pending=True
    )
    raise _queue_full(pending, max_pending)


def _queue_full(pending: int, limit: int) -> QueueFull:
    return QueueFull(
        f"You have {pending} generations waiting (the limit is {limit}); "
        "wait for some to finish, or cancel some, then try again.",
        pending=pending,
        limit=limit,
    )


async def _same_request(
    db: AsyncSession, existing: list[Generation], run_id: uuid.UUID, step_id: str
) -> list[tuple[Generation, bool]]:
    if existing[0].run_id != run_id or existing[0].step_id != step_id:
        raise IdempotencyConflict("This Idempotency-Key was already used for another step.")
    return await repository.get_many_with_adoption(db, [g.id for g in existing])


async def wait_for_terminal(
    sessions: Any, *, bus: EventBus, run_id: uuid.UUID, ids: Sequence[uuid.UUID], timeout: float
) -> None:
    """Return when every generation in `ids` is terminal, or after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    wanted = set(ids)
    with bus.subscribe(run_id) as subscription:
        while True:
            async with sessions() as db:
                rows = await repository.get_by_ids(db, list(wanted))
            if all(GenerationStatus(g.status).is_terminal for g in rows):
                return
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            # Re-check on any event of the run, and at least every second (events can be missed
            # when another instance's worker runs on SQLite).
            await subscription.get(timeout=min(remaining, 1.0))


# -- candidates --------------------------------------------------------------------------------


async def list_candidates(
    db: AsyncSession,
    *,
    user: User,
    codec: CursorCodec,
    run_id: uuid.UUID,
    step_id: str,
    statuses: Sequence[str],
    cursor: str | None,
    limit: int,
) -> tuple[list[tuple[Generation, bool]], str | None, uuid.UUID | None]:
    run = await runs_service.get_owned_run(db, user=user, run_id=run_id)
    runs_service.step_of(run, step_id)
    scope = f"candidates:{run_id}:{step_id}"
    after = codec.decode(cursor, scope=scope) if cursor else None
    rows = await repository.list_step_candidates(
        db, run_id=run.id, step_id=step_id, statuses=statuses, after=after, limit=limit + 1
    )
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1][0]
        next_cursor = codec.encode(Position(last.created_at, last.id), scope=scope)
    run_step = await runs_service.repository.get_run_step(db, run.id, step_id)
    return rows, next_cursor, run_step.adopted_generation_id if run_step else None


async def upload_candidate(
    db: AsyncSession,
    *,
    bus: EventBus,
    store: ObjectStore,
    user: User,
    run_id: uuid.UUID,
    step_id: str,
    data: bytes,
    filename: str | None,
) -> tuple[Generation, bool]:
    """Store an uploaded image as a succeeded candidate. Same bytes, same step → same asset.

    Returns the generation and whether it was created now.
    """
    run = await runs_service.get_owned_run(db, user=user, run_id=run_id)
    step = runs_service.step_of(run, step_id)
    if len(data) > MAX_UPLOAD_BYTES:
        raise PayloadTooLarge(f"Uploads are limited to {MAX_UPLOAD_BYTES // (1024 * 1024)} MB.")
    try:
        image = await asyncio.to_thread(process_image, data)
    except UnsupportedImage as exc:
        raise UnsupportedMedia(f"Upload a PNG, JPEG or WebP image ({exc}).") from None
    key = upload_object_key(
        user_id=user.id, run_id=run.id, step_id=step.id, sha256_hex=image.sha256, ext=image.ext
    )
    existing = await repository.find_by_object_key(
        db, run_id=run.id, step_id=step.id, object_key=key
    )
    if existing is not None:
        if existing.deleted_at is not None:  # uploading it again takes it out of the trash
            await record_change(db, bus, existing, {"deleted_at": None})
        return existing, False
    now = utcnow()
    generation = Generation(
        id=uuid7(),
        user_id=user.id,
        run_id=run.id,
        step_id=step.id,
        flow_slug=run.flow_slug,
        batch_id=uuid7(),
        batch_index=0,
        source="upload",
        status=GenerationStatus.SUCCEEDED.value,
        prompt=(filename or "upload")[:255],
        params={"filename": filename},
        temperature=None,
        seed=None,
        provider="upload",
        model="upload",
        object_key=key,
        thumbnail_key=thumbnail_key(key),
        mime=image.mime,
        width=image.width,
        height=image.height,
        size_bytes=image.size_bytes,
        sha256=image.sha256,
        output={},
        attempts=0,
        next_attempt_at=now,
        created_at=now,
        started_at=now,
        finished_at=now,
        updated_at=now,
    )
    try:
        async with db.begin_nested():
            db.add(generation)
            await db.flush()
    except IntegrityError:
        # The same bytes were uploaded concurrently; theirs is the asset.
        existing = await repository.find_by_object_key(
            db, run_id=run.id, step_id=step.id, object_key=key
        )
        if existing is None:
            raise
        return existing, False
    # The row is written (not yet committed); now the objects. On failure the transaction rolls
    # back and nothing is left behind.
    try:
        await store.put(key, data, content_type=image.mime)
        await store.put(generation.thumbnail_key, image.thumbnail, content_type="image/webp")
    except StorageError:
        await store.delete_many([key, thumbnail_key(key)])
        raise
    await bus.emit(db, _status_event(generation))
    return generation, True


# -- objects that must go ----------------------------------------------------------------------


async def discard_objects(
    db: AsyncSession, *, store: ObjectStore, keys: Sequence[str]
) -> list[str]:
    """Delete objects no row will reference; the keys the store refuses (or all of them, when
    it cannot be reached) are recorded in the caller's transaction, and the next `gc` deletes
    them without waiting for the orphan sweep's grace. Returns the refused keys."""
    keys = list(dict.fromkeys(k for k in keys if k))
    if not keys:
        return []
    try:
        refused = list(await store.delete_many(keys))
    except StorageError as exc:
        log.warning("could not delete %d object(s), recorded for gc: %s", len(keys), exc)
        refused = keys
    await repository.record_object_deletions(db, refused)
    return refused


# -- worker transitions ------------------------------------------------------------------------


def retry_delay(attempt: int, retry_after: float | None) -> timedelta:
    """Exponential backoff with jitter (1, 2, 4 … at most 60 s), or what the provider asked for."""
    if retry_after is not None:
        return timedelta(seconds=min(max(retry_after, 0.0), 600.0))
    base = min(2 ** max(attempt - 1, 0), 60)
    return timedelta(seconds=base * random.uniform(0.75, 1.25))


async def claim(
    db: AsyncSession,
    *,
    bus: EventBus,
    owner: str,
    limit: int,
    per_user: int,
    lease: timedelta,
) -> list[Generation]:
    rows = await repository.claim_pending(
        db, owner=owner, limit=limit, per_user=per_user, now=utcnow(), lease=lease
    )
    for generation in rows:
        await bus.emit(db, _status_event(generation))
    return rows


async def finish_succeeded(
    db: AsyncSession,
    *,
    bus: EventBus,
    generation_id: uuid.UUID,
    owner: str,
    values: dict[str, Any],
) -> Generation | None:
    now = utcnow()
    values = {
        **values,
        "status": GenerationStatus.SUCCEEDED.value,
        "error_code": None,
        "error_message": None,
        "lease_owner": None,
        "lease_expires_at": None,
        "finished_at": now,
        "updated_at": now,
    }
    generation = await repository.update_if_leased(
        db, generation_id=generation_id, owner=owner, values=values
    )
    if generation is not None:
        await bus.emit(db, _status_event(generation))
    return generation


async def finish_failed(
    db: AsyncSession,
    *,
    bus: EventBus,
    generation_id: uuid.UUID,
    owner: str,
    code: str,
    message: str,
    retryable: bool,
    retry_after: float | None,
    max_attempts: int,
    provider_request_id: str | None = None,
) -> Generation | None:
    """Fail the row — or, for a retryable error with attempts left, return it to pending."""
    now = utcnow()
    generation = await repository.update_if_leased(
        db,
        generation_id=generation_id,
        owner=owner,
        values={
            "lease_owner": None,
            "lease_expires_at": None,
            "updated_at": now,
            "error_code": code,
            "error_message": message[:2000],
        },
    )
    if generation is None:
        return None
    values: dict[str, Any]
    if retryable and generation.attempts < max_attempts:
        values = {
            "status": GenerationStatus.PENDING.value,
            "next_attempt_at": now + retry_delay(generation.attempts, retry_after),
        }
    else:
        values = {"status": GenerationStatus.FAILED.value, "finished_at": now}
    if provider_request_id:
        values["provider_request_id"] = provider_request_id
    # update_if_leased already set lease_owner to NULL; finish with a plain update of the row.
    await record_change(db, bus, generation, values)
    return generation


async def release(
    db: AsyncSession, *, bus: EventBus, generation_id: uuid.UUID, owner: str
) -> Generation | None:
    """Give a claimed row back untouched (graceful shutdown); the attempt does not count."""
    generation = await repository.update_if_leased(
        db,
        generation_id=generation_id,
        owner=owner,
        values={"lease_owner": None, "lease_expires_at": None},
    )
    if generation is not None:
        await record_change(
            db,
            bus,
            generation,
            {
                "status": GenerationStatus.PENDING.value,
                "attempts": max(generation.attempts - 1, 0),
                "next_attempt_at": utcnow(),
            },
        )
    return generation


async def recover_expired_leases(
    db: AsyncSession, *, bus: EventBus, max_attempts: int, now: datetime | None = None
) -> list[Generation]:
    """Rows whose worker vanished: back to pending, or failed `worker_lost` after max attempts."""
    now = now or utcnow()
    recovered = await repository.expired_leases(db, now=now)
    for generation in recovered:
        values: dict[str, Any] = {"lease_owner": None, "lease_expires_at": None}
        if generation.attempts < max_attempts:
            values.update(status=GenerationStatus.PENDING.value, next_attempt_at=now)
        else:
            values.update(
                status=GenerationStatus.FAILED.value,
                finished_at=now,
                error_code="worker_lost",
                error_message="The worker running this generation stopped responding.",
            )
        await record_change(db, bus, generation, values)
    return recovered


# -- deleting ----------------------------------------------------------------------------------


async def delete_run(
    db: AsyncSession, *, bus: EventBus, user: User, run_id: uuid.UUID
) -> tuple[datetime, int]:
    """Soft-delete a run and every generation in it; queued ones are canceled."""
    run = await runs_service.get_owned_run(db, user=user, run_id=run_id, for_update=True)
    now = utcnow()
    run.deleted_at = now
    run.updated_at = now
    generations = await repository.live_generations_of_run(db, run.id)
    for generation in generations:
        values: dict[str, Any] = {"deleted_at": now}
        if generation.status == GenerationStatus.PENDING.value:
            values.update(status=GenerationStatus.CANCELED.value, finished_at=now)
        await record_change(db, bus, generation, values)
    return now, len(generations)
