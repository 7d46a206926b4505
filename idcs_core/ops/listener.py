"""An event plugin that hands every event hook to one coroutine on the server's event loop.

The core calls event hooks in a worker thread (``PluginRegistry.emit``); ``EventListener`` turns
each call into ``await on_event(name, data)`` on the loop the server runs on, so subclasses
(webhooks, live events, metrics) are plain async code.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from idcs_core.hookspecs import hookimpl

log = logging.getLogger("idcs.ops")

# every event hook an EventListener hears (the EventSpec hooks)
EVENT_NAMES = ("idcs_startup", "user_logged_in", "host_changed", "vm_created", "vm_deleted", "vm_powered",
               "task_finished", "vm_traffic_over")

# keys never passed on, whatever a hook hands over (the hooks promise no secrets; this makes sure)
_SECRET_KEY = re.compile(r"pass|secret|token|private|key$", re.IGNORECASE)


def scrub(value: Any) -> Any:
    """``value`` without any mapping entry whose key names a secret."""
    if isinstance(value, dict):
        return {k: scrub(v) for k, v in value.items() if not (isinstance(k, str) and _SECRET_KEY.search(k))}
    if isinstance(value, list | tuple):
        return [scrub(v) for v in value]
    return value


@dataclass(frozen=True)
class Event:
    """One thing that happened: ``name`` is the event hook, ``data`` its arguments (scrubbed)."""

    name: str
    data: dict[str, Any]
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    time: datetime = field(default_factory=lambda: datetime.now(UTC))

    def document(self) -> dict[str, Any]:
        """The JSON document webhooks and live-event clients receive."""
        return {"id": self.id, "event": self.name, "time": self.time.isoformat(), "data": self.data}

    def owner_ids(self) -> set[int]:
        """Users this event is about (a VM's owner, a task's user, the user who logged in)."""
        found: set[int] = set()
        for key in ("vm", "task"):
            item = self.data.get(key)
            if isinstance(item, dict):
                for owner_key in ("owner_id", "user_id"):
                    if isinstance(item.get(owner_key), int):
                        found.add(item[owner_key])
        user = self.data.get("user")
        if self.name == "user_logged_in" and isinstance(user, dict) and isinstance(user.get("id"), int):
            found.add(user["id"])
        return found


class EventListener:
    """Base of the operations' event plugins: subclasses implement ``on_event``."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    async def on_event(self, event: Event) -> None:
        raise NotImplementedError

    def _hear(self, name: str, data: dict[str, Any]) -> None:
        event = Event(name, scrub(data))
        if self.loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            self.loop.create_task(self._handle(event))
        else:
            self.loop.call_soon_threadsafe(lambda: self.loop.create_task(self._handle(event)))

    async def _handle(self, event: Event) -> None:
        try:
            await self.on_event(event)
        except Exception:  # one failing listener never stops the others or the server
            log.exception("%s failed on event %s", type(self).__name__, event.name)

    @hookimpl
    def idcs_startup(self, config: dict[str, Any]) -> None:
        self._hear("idcs_startup", {"config": config})

    @hookimpl
    def user_logged_in(self, user: dict[str, Any], source_ip: str) -> None:
        self._hear("user_logged_in", {"user": user, "source_ip": source_ip})

    @hookimpl
    def host_changed(self, host: dict[str, Any], change: str) -> None:
        self._hear("host_changed", {"host": host, "change": change})

    @hookimpl
    def vm_created(self, vm: dict[str, Any]) -> None:
        self._hear("vm_created", {"vm": vm})

    @hookimpl
    def vm_deleted(self, vm: dict[str, Any]) -> None:
        self._hear("vm_deleted", {"vm": vm})

    @hookimpl
    def vm_powered(self, vm: dict[str, Any], action: str) -> None:
        self._hear("vm_powered", {"vm": vm, "action": action})

    @hookimpl
    def task_finished(self, task: dict[str, Any]) -> None:
        self._hear("task_finished", {"task": task})

    @hookimpl
    def vm_traffic_over(self, vm: dict[str, Any], used_bytes: int, limit_bytes: int, action: str) -> None:
        self._hear("vm_traffic_over", {"vm": vm, "used_bytes": used_bytes, "limit_bytes": limit_bytes,
                                       "action": action})
