"""Generation status events: emitted inside the transaction that changes a row, delivered after it
commits — in-process on SQLite, through LISTEN/NOTIFY on PostgreSQL so every instance sees them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from sqlalchemy import event, func, make_url, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

log = logging.getLogger("flowstudio.events")

CHANNEL = "flowstudio_generations"
_PENDING_KEY = "flowstudio_events"
# NOTIFY payloads are limited to 8000 bytes; long prompts are cut in the event (not in the row).
_MAX_PAYLOAD = 7000


# Fields of an event on the NOTIFY channel, joined by a character JSON text never holds raw.
_SEPARATOR = "\x1f"


@dataclass(frozen=True, slots=True)
class Event:
    """One event, serialised once when it is emitted: `data` is the JSON an event stream sends,
    and the same text travels through NOTIFY and reaches every subscriber unchanged."""

    kind: str  # "generation", "adoption", or a control event ("resync", "reconnect")
    data: str = "{}"
    run_id: str | None = None
    user_id: str | None = None
    status: str | None = None  # a generation event's new status (the worker wakes on pending)

    @classmethod
    def of(
        cls,
        kind: str,
        body: BaseModel | dict[str, Any],
        *,
        run_id: uuid.UUID,
        user_id: uuid.UUID,
        status: str | None = None,
    ) -> Event:
        """A model is written by pydantic straight to JSON; only a body too long for a NOTIFY
        payload is taken apart, to cut its prompt (in the event, never in the row)."""
        data = body.model_dump_json() if isinstance(body, BaseModel) else _json(body)
        if len(data.encode()) > _MAX_PAYLOAD:
            fields = body.model_dump(mode="json") if isinstance(body, BaseModel) else body
            if isinstance(fields.get("prompt"), str):
                cut = fields["prompt"][:500] + "…"
                data = _json(dict(fields, prompt=cut, prompt_truncated=True))
        return cls(kind, data, str(run_id), str(user_id), status)

    @property
    def sse(self) -> bytes:
        return f"event: {self.kind}\ndata: {self.data}\n\n".encode()

    def encode(self) -> str:
        fields = (self.kind, self.run_id or "", self.user_id or "", self.status or "", self.data)
        return _SEPARATOR.join(fields)

    @classmethod
    def decode(cls, text: str) -> Event:
        kind, run_id, user_id, status, data = text.split(_SEPARATOR, 4)
        return cls(kind, data, run_id or None, user_id or None, status or None)


# Control events a subscriber receives besides the published ones.
RESYNC = Event("resync")  # events were dropped: reload the state from the API
RECONNECT = Event("reconnect")  # this process is stopping: connect again (to another one)


class Subscription:
    """One consumer's bounded queue of events. A consumer that falls behind does not stall
    the others: its queue is emptied and it receives `resync` instead, once, so it knows
    that it missed events and reloads what it shows."""

    def __init__(self, bus: EventBus, run_id: uuid.UUID | None, maxsize: int = 1000) -> None:
        self.bus = bus
        self.run_id = run_id
        self.queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=maxsize)
        self.overflowed = 0  # how many times events were dropped

    def deliver(self, event: Event) -> None:
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.overflowed += 1
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(RESYNC)

    async def get(self, timeout: float | None = None) -> Event | None:
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
    async def emit(self, db: AsyncSession, event: Event) -> None:
        """Queue an event in the caller's transaction; it is delivered only if that commits."""
        if self.uses_notify:
            await db.execute(select(func.pg_notify(CHANNEL, event.encode())))
        else:
            db.sync_session.info.setdefault(_PENDING_KEY, []).append(event)

    def _after_commit(self, session: Session) -> None:
        for pending in session.info.pop(_PENDING_KEY, []):
            self.publish(pending)

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

    def publish(self, event: Event) -> None:
        key = uuid.UUID(event.run_id) if event.run_id else None
        for subscription in list(self._by_run.get(key, ())) + list(self._by_run.get(None, ())):
            subscription.deliver(event)

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
            self.publish(Event.decode(payload))
        except ValueError:
            log.warning("ignored a malformed event payload")


def _json(body: dict[str, Any]) -> str:
    return json.dumps(body, default=str, separators=(",", ":"), ensure_ascii=False)
