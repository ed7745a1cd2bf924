"""The worker: claims pending generations, calls providers, stores images, finishes rows.

Each job runs under a lease that a heartbeat extends; a row is finished only while the lease is
still ours. Expired leases (a crashed worker) are recovered by any worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from flowstudio.context import AppContext
from flowstudio.db import utcnow
from flowstudio.generations import repository, service
from flowstudio.generations.events import RESYNC, EventBus
from flowstudio.generations.models import Generation, GenerationStatus
from flowstudio.imaging import (
    ImageProcessor,
    UnsupportedImage,
    inspect_image,
)
from flowstudio.providers import (
    GenerationRequest,
    InputImage,
    ProviderError,
    ProviderTimeout,
    UnknownProvider,
)
from flowstudio.storage import StorageError
from flowstudio.storage.keys import (
    generation_object_key,
    generation_object_prefix,
    thumbnail_key,
)

log = logging.getLogger("flowstudio.worker")

IDLE_POLL_SECONDS = 1.0


class Worker:
    def __init__(
        self,
        ctx: AppContext,
        bus: EventBus,
        *,
        concurrency: int | None = None,
        name: str | None = None,
        maintenance: Callable[[], Any] | None = None,
    ) -> None:
        settings = ctx.settings
        self.ctx = ctx
        self.bus = bus
        self.owner = name or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.concurrency = concurrency or settings.worker_concurrency
        self.lease = timedelta(seconds=settings.lease_seconds)
        self.maintenance = maintenance
        self.images = ImageProcessor(settings.image_processes)
        self._jobs: dict[uuid.UUID, asyncio.Task[None]] = {}
        # The object keys each running attempt is writing, for cleanup when one is cut short.
        self._attempt_keys: dict[uuid.UUID, list[str]] = {}
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._stop_requested_at = 0.0
        self._tasks: list[asyncio.Task[None]] = []

    # -- life cycle --------------------------------------------------------------------------
    async def start(self) -> None:
        # Heartbeats have a task of their own: nothing else (recovery, garbage collection, a
        # slow store) can make a lease run out while its job is alive.
        self._tasks = [
            asyncio.create_task(self._claim_loop(), name="worker-claim"),
            asyncio.create_task(self._heartbeat_loop(), name="worker-heartbeat"),
            asyncio.create_task(self._maintenance_loop(), name="worker-maintenance"),
            asyncio.create_task(self._wake_on_events(), name="worker-wake"),
        ]
        log.info("worker %s started, %d generations at once", self.owner, self.concurrency)

    def stop_claiming(self) -> None:
        """The first step of a shutdown: no new work from now on (safe from a signal handler
        scheduled on the loop)."""
        if not self._stopping.is_set():
            self._stop_requested_at = asyncio.get_running_loop().time()
        self._stopping.set()
        self._wake.set()

    async def stop(self, *, grace_seconds: float | None = None) -> None:
        """Stop claiming; let running jobs finish for `grace_seconds` (the setting
        FLOWSTUDIO_SHUTDOWN_GRACE_SECONDS by default), then release the rest to pending at
        once, so another worker takes them without waiting for a lease to expire."""
        if grace_seconds is None:
            grace_seconds = self.ctx.settings.shutdown_grace_seconds
        self.stop_claiming()
        # The grace counts from the first request to stop (the signal), not from now.
        grace_seconds -= asyncio.get_running_loop().time() - self._stop_requested_at
        claim_task = self._tasks[0] if self._tasks else None
        if claim_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await claim_task
        if self._jobs:
            await asyncio.wait(list(self._jobs.values()), timeout=max(grace_seconds, 0))
        if self._jobs:
            log.info(
                "worker %s: releasing %d unfinished generation(s) to the queue",
                self.owner,
                len(self._jobs),
            )
        for task in list(self._jobs.values()):
            task.cancel()
        if self._jobs:
            await asyncio.gather(*self._jobs.values(), return_exceptions=True)
        for task in self._tasks[1:]:
            task.cancel()
        await asyncio.gather(*self._tasks[1:], return_exceptions=True)
        self._tasks = []
        await self.images.close()

    # -- loops -------------------------------------------------------------------------------
    async def _wake_on_events(self) -> None:
        with self.bus.subscribe(None) as subscription:
            while True:
                event = await subscription.queue.get()
                # `resync`: events were dropped, one of them may have been new work.
                if event.status == "pending" or event is RESYNC:
                    self._wake.set()

    async def _claim_loop(self) -> None:
        settings = self.ctx.settings
        while not self._stopping.is_set():
            # Cleared before claiming: a wake-up that arrives during the claim is not lost.
            self._wake.clear()
            free = self.concurrency - len(self._jobs)
            claimed: list[Generation] = []
            if free > 0:
                try:
                    async with self.ctx.sessions() as db:
                        claimed = await service.claim(
                            db,
                            bus=self.bus,
                            owner=self.owner,
                            limit=free,
                            per_user=settings.per_user_concurrency,
                            lease=self.lease,
                        )
                        await db.commit()
                except Exception:  # the database may be restarting; try again shortly
                    log.exception("claiming generations failed")
                    await asyncio.sleep(1.0)
                    continue
            for generation in claimed:
                task = asyncio.create_task(self._run_job(generation), name=f"job-{generation.id}")
                self._jobs[generation.id] = task
                task.add_done_callback(lambda _t, gid=generation.id: self._job_done(gid))
            if claimed and len(self._jobs) < self.concurrency:
                continue  # there may be more due work
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), IDLE_POLL_SECONDS)

    def _job_done(self, generation_id: uuid.UUID) -> None:
        self._jobs.pop(generation_id, None)
        self._wake.set()  # a slot is free

    async def _heartbeat_loop(self) -> None:
        """Extend our leases three times a lease; only the database can delay it."""
        interval = max(self.lease.total_seconds() / 3, 0.05)
        while True:
            await asyncio.sleep(interval)
            try:
                await self._heartbeat()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("extending leases failed")

    async def _maintenance_loop(self) -> None:
        """Recover expired leases and run periodic maintenance, apart from the heartbeat: a
        collection that takes minutes delays only the next collection."""
        interval = max(self.lease.total_seconds() / 3, 0.05)
        while True:
            await asyncio.sleep(interval)
            try:
                async with self.ctx.sessions() as db:
                    recovered = await service.recover_expired_leases(
                        db, bus=self.bus, max_attempts=self.ctx.settings.max_attempts
                    )
                    # Before the commit: a worker killed in between leaves the rows expired,
                    # and the next recovery deletes again (idempotent). Deleting after it
                    # left the objects of a failed row for good.
                    await self._discard_objects_of_lost(db, recovered)
                    await db.commit()
                if recovered:
                    log.warning("recovered %d generation(s) from expired leases", len(recovered))
                    self._wake.set()
                if self.maintenance is not None:
                    await self.maintenance()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("lease recovery or maintenance failed")

    async def _discard_objects_of_lost(self, db: Any, recovered: list[Generation]) -> None:
        """A worker that died between storing the image and finishing the row left objects
        behind. A row retried later overwrites them (same key); one that ends `worker_lost`
        must leave nothing in the store, like any failed generation."""
        for generation in recovered:
            if generation.status != GenerationStatus.FAILED.value:
                continue
            prefix = generation_object_prefix(
                user_id=generation.user_id,
                run_id=generation.run_id,
                step_id=generation.step_id,
                generation_id=generation.id,
            )
            try:
                keys = [info.key async for info in self.ctx.store.list_prefix(prefix)]
            except StorageError:  # the orphan sweep of `flowstudio gc` removes them later
                log.exception("could not list the objects of lost generation %s", generation.id)
                continue
            await service.discard_objects(db, store=self.ctx.store, keys=keys)

    async def _heartbeat(self) -> None:
        ids = list(self._jobs)
        if not ids:
            return
        async with self.ctx.sessions() as db:
            held = await repository.extend_leases(
                db, owner=self.owner, ids=ids, until=utcnow() + self.lease
            )
            await db.commit()
        for lost in set(ids) - held:
            task = self._jobs.get(lost)
            # Cancelled once only: a second cancel would cut short the clean-up the first one
            # started (deleting what the attempt wrote), and leave its objects behind.
            if task is not None and not task.cancelling():
                # Why (purged, cancelled, taken over) is logged as the job settles.
                log.info("no longer holds %s; abandoning it", lost)
                task.cancel()

    # -- one job -----------------------------------------------------------------------------
    async def _run_job(self, generation: Generation) -> None:
        try:
            await self._process(generation)
        except asyncio.CancelledError:
            # Shutdown, or the row is no longer ours (purged, or its lease lost).
            keys = self._attempt_keys.get(generation.id, [])
            released = None
            with contextlib.suppress(Exception):
                async with self.ctx.sessions() as db:
                    released = await service.release(
                        db, bus=self.bus, generation_id=generation.id, owner=self.owner
                    )
                    if released is not None and keys:
                        # Before the release commits, nobody else can claim the row and write
                        # these keys: what this attempt wrote goes now.
                        await service.discard_objects(db, store=self.ctx.store, keys=keys)
                    await db.commit()
            if released is None and keys:
                with contextlib.suppress(Exception):
                    await self._settle_unrecorded(generation, keys)
            raise
        except Exception:
            log.exception("generation %s failed unexpectedly", generation.id)
            await self._fail(
                generation,
                code="internal_error",
                retryable=False,
                message="FlowStudio failed while processing this generation.",
            )
        finally:
            self._attempt_keys.pop(generation.id, None)

    async def _fail(
        self,
        generation: Generation,
        *,
        code: str,
        message: str,
        retryable: bool,
        retry_after: float | None = None,
        provider_request_id: str | None = None,
    ) -> None:
        async with self.ctx.sessions() as db:
            await service.finish_failed(
                db,
                bus=self.bus,
                generation_id=generation.id,
                owner=self.owner,
                code=code,
                message=message,
                retryable=retryable,
                retry_after=retry_after,
                max_attempts=self.ctx.settings.max_attempts,
                provider_request_id=provider_request_id,
            )
            await db.commit()

    async def _fail_unusable(
        self, generation: Generation, provider_request_id: str | None, exc: UnsupportedImage
    ) -> None:
        await self._fail(
            generation,
            code="provider_error",
            retryable=False,
            message=f"The provider returned an unusable image: {exc}",
            provider_request_id=provider_request_id,
        )

    async def _process(self, generation: Generation) -> None:
        settings = self.ctx.settings
        store = self.ctx.store
        timings: dict[str, float] = {}
        started = time.perf_counter()
        try:
            provider = self.ctx.providers.get(generation.provider)
        except UnknownProvider:
            await self._fail(
                generation,
                code="invalid_request",
                retryable=False,
                message=f"The provider '{generation.provider}' is not configured.",
            )
            return
        params = generation.params or {}
        try:
            input_images = tuple(
                [
                    InputImage(
                        data=await store.get(item["object_key"]),
                        mime=item.get("mime") or "",
                        step_id=item.get("step_id"),
                    )
                    for item in params.get("inputs", [])
                ]
            )
        except StorageError as exc:
            await self._fail(
                generation,
                code="storage_error",
                retryable=False,
                message=f"An input image could not be read: {exc}",
            )
            return
        request = GenerationRequest(
            prompt=generation.prompt,
            model=generation.model,
            width=int(params.get("width", 1024)),
            height=int(params.get("height", 1024)),
            seed=generation.seed,
            temperature=generation.temperature,
            input_images=input_images,
            options=params.get("options") or {},
        )
        timings["inputs_ms"] = _ms(started)
        mark = time.perf_counter()
        try:
            async with asyncio.timeout(settings.provider_timeout_seconds):
                result = await provider.generate(request)
        except TimeoutError:
            error = ProviderTimeout(
                f"The provider did not answer within {settings.provider_timeout_seconds:g} s."
            )
            await self._fail(
                generation, code=error.code, message=error.message, retryable=error.retryable
            )
            return
        except ProviderError as error:
            await self._fail(
                generation,
                code=error.code,
                message=error.message,
                retryable=error.retryable,
                retry_after=error.retry_after,
                provider_request_id=error.provider_request_id,
            )
            return
        timings["provider_ms"] = _ms(mark)
        mark = time.perf_counter()
        try:
            info = inspect_image(result.image)  # the header alone: the key needs the format
        except UnsupportedImage as exc:
            await self._fail_unusable(generation, result.provider_request_id, exc)
            return
        key = generation_object_key(
            user_id=generation.user_id,
            run_id=generation.run_id,
            step_id=generation.step_id,
            generation_id=generation.id,
            ext=info.ext,
        )
        thumb = thumbnail_key(key)
        self._attempt_keys[generation.id] = [key, thumb]  # cleaned up if the attempt is cut
        # The original does not depend on the thumbnail: it is written while that is made.
        put_original = asyncio.ensure_future(store.put(key, result.image, content_type=info.mime))
        try:
            image = await self.images.process(result.image)
        except BaseException as exc:
            # No half state: the original goes once its write has settled.
            await asyncio.gather(put_original, return_exceptions=True)
            with contextlib.suppress(Exception):
                await store.delete_many([key])
            if not isinstance(exc, UnsupportedImage):
                raise
            await self._fail_unusable(generation, result.provider_request_id, exc)
            return
        timings["processing_ms"] = _ms(mark)
        mark = time.perf_counter()
        # Both puts settle before we look at the outcome, so a cleanup never races a write:
        # also when the job is cancelled meanwhile (its row purged), since a cancelled await
        # does not stop a request already on its way to the store.
        writes = asyncio.gather(
            put_original,
            store.put(thumb, image.thumbnail, content_type="image/webp"),
            return_exceptions=True,
        )
        try:
            outcomes = await asyncio.shield(writes)
        except asyncio.CancelledError:
            await writes
            raise
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        if failures:
            unexpected = [f for f in failures if not isinstance(f, StorageError)]
            # No half state: whatever was written goes, and the row says why.
            with contextlib.suppress(Exception):
                await store.delete_many([key, thumb])
            if unexpected:
                raise unexpected[0]
            await self._fail(
                generation,
                code="storage_error",
                retryable=False,
                message=f"The image could not be stored: {failures[0]}",
                provider_request_id=result.provider_request_id,
            )
            return
        timings["storage_ms"] = _ms(mark)
        timings["total_ms"] = _ms(started)
        async with self.ctx.sessions() as db:
            finished = await service.finish_succeeded(
                db,
                bus=self.bus,
                generation_id=generation.id,
                owner=self.owner,
                values={
                    "object_key": key,
                    "thumbnail_key": thumb,
                    "mime": image.mime,
                    "width": image.width,
                    "height": image.height,
                    "size_bytes": image.size_bytes,
                    "sha256": image.sha256,
                    "provider_request_id": result.provider_request_id,
                    "model": result.model,
                    "output": {
                        "provider": _finite(result.metadata),
                        "timings": timings,
                        "worker": self.owner,
                    },
                },
            )
            await db.commit()
        if finished is None:
            await self._settle_unrecorded(generation, [key, thumb])

    async def _settle_unrecorded(self, generation: Generation, keys: list[str]) -> None:
        """The result could not be recorded: the row is no longer ours. Say why, and delete
        what this attempt wrote unless the row still needs it."""
        async with self.ctx.sessions() as db:
            [row] = await repository.get_by_ids(db, [generation.id]) or [None]
            if row is None:
                reason, discard = "purged while running", True
            elif row.status == GenerationStatus.CANCELED.value:
                reason, discard = "cancelled while running", True
            else:
                # Another worker took it over after our lease expired: a new attempt writes
                # the same keys, and a finished one may hold them. A failed row holds none.
                reason = "lease lost to another worker"
                discard = row.status == GenerationStatus.FAILED.value or (
                    row.status == GenerationStatus.SUCCEEDED.value and row.object_key not in keys
                )
            if discard:
                await service.discard_objects(db, store=self.ctx.store, keys=keys)
                await db.commit()
        log.warning(
            "generation %s was %s; %s",
            generation.id,
            reason,
            "deleted the objects this attempt wrote" if discard else "its objects are kept",
        )


def _finite(value: Any) -> Any:
    """What a provider reported, storable as strict JSON: NaN and infinities become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000, 2)
