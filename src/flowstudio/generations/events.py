"""Generation status events: emitted inside the transaction that changes a row, delivered after it
commits — in-process on SQLite, through LISTEN/NOTIFY on PostgreSQL so every instance sees them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from typing import Any

from sqlalchemy import event, func, make_url, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

log = logging.getLogger("flowstudio.events")

CHANNEL = "flowstudio_generations"
_PENDING_KEY = "flowstudio_events"
# NOTIFY payloads are limited to 8000 bytes; long prompts are cut in the event (not in the row).
_MAX_PAYLOAD = 7000


# Control events a subscriber receives besides the published ones (`event` names the kind).
RESYNC = {"event": "resync"}  # events were dropped: reload the state from the API
RECONNECT = {"event": "reconnect"}  # this process is stopping: connect again (to another one)


class Subscription:
    """One consumer's bounded queue of events. A consumer that falls behind does not stall
    the others: its queue is emptied and it receives `resync` instead, once, so it knows
    that it missed events and reloads what it shows."""

    def __init__(self, bus: EventBus, run_id: uuid.UUID | None, maxsize: int = 1000) -> None:
        self.bus = bus
        self.run_id = run_id
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=maxsize)
        self.overflowed = 0  # how many times events were dropped

    def deliver(self, payload: dict[str, Any]) -> None:
        try:
            self.queue.put_nowait(payload)
        except asyncio.QueueFull:
            self.overflowed += 1
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(RESYNC)

    async def get(self, timeout: float | None = None) -> dict[str, Any] | None:
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            return None

    def close(self) -> None:
        self.bus._unsubscribe(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventBus:
    """Fans generation events out to subscribers (SSE streams, waiting requests, the worker)."""

    def __init__(self, *, database_url: str) -> None:
        self.database_url = database_url
        self.uses_notify = database_url.startswith("postgresql")
        self._by_run: dict[uuid.UUID | None, set[Subscription]] = {}
        self.closing = False
        self._listener_task: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()
        # Sessions made with this class (see session_class) hand their committed events to us.
        self.session_class: type[Session] = type("EventSession", (Session,), {})
        event.listen(self.session_class, "after_commit", self._after_commit)
        event.listen(self.session_class, "after_soft_rollback", self._after_rollback)

    # -- emitting ---------------------------------------------------------------------------
    async def emit(self, db: AsyncSession, payload: dict[str, Any]) -> None:
        """Queue an event in the caller's transaction; it is delivered only if that commits."""
        if self.uses_notify:
            await db.execute(select(func.pg_notify(CHANNEL, _encode(payload))))
        else:
            # Same JSON shape as a NOTIFY payload, so subscribers see one format.
            db.sync_session.info.setdefault(_PENDING_KEY, []).append(json.loads(_encode(payload)))

    def _after_commit(self, session: Session) -> None:
        for payload in session.info.pop(_PENDING_KEY, []):
            self.publish(payload)

    def _after_rollback(self, session: Session, previous_transaction: Any) -> None:
        if previous_transaction.parent is None:
            session.info.pop(_PENDING_KEY, None)

    def close_streams(self) -> None:
        """The process is stopping: every subscriber, now and from now on, receives
        `reconnect` (an event stream sends it and ends, so the page connects again)."""
        self.closing = True
        for subscribers in list(self._by_run.values()):
            for subscription in list(subscribers):
                subscription.deliver(RECONNECT)

    def publish(self, payload: dict[str, Any]) -> None:
        run_id = payload.get("run_id")
        key = uuid.UUID(run_id) if isinstance(run_id, str) else run_id
        for subscription in list(self._by_run.get(key, ())) + list(self._by_run.get(None, ())):
            subscription.deliver(payload)

    # -- subscribing ------------------------------------------------------------------------
    def subscribe(self, run_id: uuid.UUID | None = None) -> Subscription:
        """Events of one run, or of every run when run_id is None."""
        subscription = Subscription(self, run_id)
        self._by_run.setdefault(run_id, set()).add(subscription)
        if self.closing:
            subscription.deliver(RECONNECT)
        return subscription

    def _unsubscribe(self, subscription: Subscription) -> None:
        subscribers = self._by_run.get(subscription.run_id)
        if subscribers is not None:
            subscribers.discard(subscription)
            if not subscribers:
                del self._by_run[subscription.run_id]

    # -- PostgreSQL LISTEN ------------------------------------------------------------------
    async def start(self) -> None:
        if self.uses_notify and self._listener_task is None:
            self._listener_task = asyncio.create_task(self._listen_forever(), name="event-listener")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._listening.wait(), 10)

    async def stop(self) -> None:
        if self._listener_task is not None:
            self._listener_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener_task
            self._listener_task = None

    async def _listen_forever(self) -> None:
        import asyncpg

        dsn = (
            make_url(self.database_url)
            .set(drivername="postgresql")
            .render_as_string(hide_password=False)
        )
        delay = 0.5
        while True:
            connection = None
            try:
                connection = await asyncpg.connect(dsn, timeout=10)
                lost = asyncio.Event()
                connection.add_termination_listener(lambda _c, lost=lost: lost.set())
                await connection.add_listener(CHANNEL, self._on_notify)
                self._listening.set()
                delay = 0.5
                while not lost.is_set():
                    # A cheap query now and then notices a dead connection that never said so.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), 15)
                    if not lost.is_set():
                        await asyncio.wait_for(connection.execute("SELECT 1"), 10)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # reconnect on any connection failure
                log.warning("event listener lost its connection (%s); reconnecting", exc)
            finally:
                self._listening.clear()
                if connection is not None:
                    with contextlib.suppress(Exception):
                        await connection.close(timeout=2)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10)

    def _on_notify(self, _connection: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            self.publish(json.loads(payload))
        except ValueError:
            log.warning("ignored a malformed event payload")


def _encode(payload: dict[str, Any]) -> str:
    text = json.dumps(payload, default=str, separators=(",", ":"))
    if len(text.encode()) > _MAX_PAYLOAD and isinstance(payload.get("prompt"), str):
        trimmed = dict(payload, prompt=payload["prompt"][:500] + "…", prompt_truncated=True)
        text = json.dumps(trimmed, default=str, separators=(",", ":"))
    return text
