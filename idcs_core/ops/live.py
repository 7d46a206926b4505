"""Live events for ``GET /api/events`` (Server-Sent Events).

``LiveEvents`` is an event plugin that fans every event out to the open streams. A stream shows
a user only events about their own VMs and tasks (admins see all), plus the progress of their
running tasks, read from the task table (indexed by state) every ``PROGRESS_POLL_SECONDS``:
progress is stored by the task runner, so any process that runs tasks is seen.

On PostgreSQL an event raised on one node reaches the streams of every node: the node that
raised it sends its document with ``pg_notify`` on the live events' channel (``db.bus``), the
others hand it to their streams (only to streams: their webhooks and other event plugins do not
hear it again, so each webhook delivery is made once, by the node that raised the event). An
event whose document is too large for a notification (``NOTIFY_LIMIT``) reaches only the
streams of its own node.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import select, text

from idcs_core.db.bus import EVENTS_SUFFIX
from idcs_core.db.models import Task
from idcs_core.db.session import NOTIFY_LIMIT
from idcs_core.ops.listener import Event, EventListener
from idcs_core.tasks import ACTIVE_STATES

if TYPE_CHECKING:
    from idcs_core.context import CoreContext
    from idcs_core.services.auth import Principal

log = logging.getLogger("idcs.events")

PROGRESS_POLL_SECONDS = 0.5
HEARTBEAT_SECONDS = 15.0
QUEUE_LIMIT = 1000  # events a slow client may lag behind before older ones are dropped
ADMIN_ONLY_EVENTS = {"idcs_startup", "host_changed"}


def visible(event: Event, principal: Principal) -> bool:
    if principal.is_admin:
        return True
    if event.name in ADMIN_ONLY_EVENTS:
        return False
    return principal.user_id in event.owner_ids()


def sse(event: str, data: Any, event_id: str | None = None) -> bytes:
    """One Server-Sent Events message."""
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {event}\ndata: ".encode() + orjson.dumps(data, default=str) + b"\n\n"


class LiveEvents(EventListener):
    """The event plugin behind ``/api/events``."""

    def __init__(self, core: CoreContext, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.core = core
        self.streams: set[asyncio.Queue[Event]] = set()
        core.bus.event_handlers.append(self._remote)

    def _fan_out(self, event: Event) -> None:
        for queue in list(self.streams):
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(event)

    async def on_event(self, event: Event) -> None:
        self._fan_out(event)
        if self.core.db.shared:
            await self._publish(event)

    async def _publish(self, event: Event) -> None:
        """Send ``event`` to the streams of the other nodes."""
        db = self.core.db
        payload = orjson.dumps({"o": db.node_id, "e": event.document()}, default=str).decode()
        if len(payload) > NOTIFY_LIMIT:
            log.info("live events: %s too large to reach other nodes' streams (%d bytes)", event.name, len(payload))
            return
        channel = await db.channel() + EVENTS_SUFFIX
        async with db.engine.connect() as conn:
            await conn.execute(text("SELECT pg_notify(:channel, :payload)"), {"channel": channel, "payload": payload})
            await conn.commit()

    def _remote(self, payload: str) -> None:
        """An event another node raised (see ``_publish``)."""
        message = orjson.loads(payload)
        if message.get("o") == self.core.db.node_id:
            return
        doc = message["e"]
        self._fan_out(Event(doc["event"], doc.get("data") or {}, doc["id"], datetime.fromisoformat(doc["time"])))

    async def stream(self, principal: Principal, still_valid: Callable[[], Awaitable[bool]]) -> AsyncIterator[bytes]:
        """The messages of one client, until it goes away or ``still_valid()`` (asked at each
        heartbeat) says its login ended (logout, expiry, user deleted)."""
        queue: asyncio.Queue[Event] = asyncio.Queue(QUEUE_LIMIT)
        self.streams.add(queue)
        sent: dict[str, tuple[str, int, str]] = {}
        try:
            yield b"retry: 3000\n: connected\n\n"
            idle = 0.0
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), PROGRESS_POLL_SECONDS)
                except TimeoutError:
                    event = None
                if event is not None:
                    if visible(event, principal):
                        idle = 0.0
                        yield sse(event.name, event.document(), event.id)
                    continue
                try:
                    changed = await self._progress(principal, sent)
                except Exception:  # the database away for a moment: the stream goes on
                    log.warning("live events: reading task progress failed", exc_info=True)
                    changed = []
                for task in changed:
                    idle = 0.0
                    yield sse("task_progress", task)
                idle += PROGRESS_POLL_SECONDS
                if idle >= HEARTBEAT_SECONDS:
                    idle = 0.0
                    if not await still_valid():
                        yield sse("end", {"reason": "the login ended"})
                        return
                    yield b": keep-alive\n\n"
        finally:
            self.streams.discard(queue)

    async def _progress(self, principal: Principal, sent: dict[str, tuple[str, int, str]]) -> list[dict[str, Any]]:
        """Running tasks of the caller whose state, progress or message changed since last sent."""
        query = select(Task.id, Task.kind, Task.host_name, Task.vm_uuid, Task.user_id, Task.state, Task.progress,
                       Task.message).where(Task.state.in_(ACTIVE_STATES))
        if not principal.is_admin:
            query = query.where(Task.user_id == principal.user_id)
        async with self.core.db.session() as s:
            rows = (await s.execute(query)).all()
        changed = []
        for row in rows:
            key = (row.state, row.progress, row.message)
            if sent.get(row.id) != key:
                sent[row.id] = key
                changed.append({"id": row.id, "kind": row.kind, "host_name": row.host_name, "vm_uuid": row.vm_uuid,
                                "state": row.state, "progress": row.progress, "message": row.message})
        active = {row.id for row in rows}
        for gone in [t for t in sent if t not in active]:
            del sent[gone]
        return changed
