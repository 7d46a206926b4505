"""The audit log (``/api/system/logger/detail``), written by an event plugin.

It hears two event hooks: ``action_recorded`` (something a user did, or tried, through a service:
logins, users, tokens, settings, the start of a long operation...) and ``task_finished`` (how
that long operation ended). Nothing else writes the audit log.

Event hooks run in a worker thread; each entry is written on the core's event loop (its database
is async) and the hook returns once the entry is stored, so an answer that follows the action sees
it in the log.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from idcs_core.db.models import User
from idcs_core.hookspecs import hookimpl
from idcs_core.services.audit import entry

if TYPE_CHECKING:
    from idcs_core.context import CoreContext

log = logging.getLogger("idcs.audit")
WRITE_TIMEOUT = 30.0  # seconds a hook waits for its entry to be stored


class AuditLogPlugin:
    """Writes one audit entry per recorded action and per finished task."""

    def __init__(self, core: CoreContext) -> None:
        self.core = core
        self.loop = asyncio.get_running_loop()

    @hookimpl
    def action_recorded(self, entry: dict[str, Any]) -> None:
        self._store(self._write_action(entry))

    @hookimpl
    def task_finished(self, task: dict[str, Any]) -> None:
        self._store(self._write_outcome(task))

    def _store(self, write: Any) -> None:
        """Run coroutine ``write`` on the core's loop; from a worker thread, wait until it is done."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:  # called on the loop itself: it cannot wait for itself
            self.core.spawn(write)
            return
        asyncio.run_coroutine_threadsafe(write, self.loop).result(WRITE_TIMEOUT)

    async def _write_action(self, fields: dict[str, Any]) -> None:
        async with self.core.db.session() as s:
            s.add(entry(str(fields.get("username") or ""), str(fields.get("action") or ""),
                        str(fields.get("target") or ""), str(fields.get("result") or "success"),
                        str(fields.get("detail") or ""), str(fields.get("source_ip") or "")))

    async def _write_outcome(self, task: dict[str, Any]) -> None:
        """The entry saying how a task ended (the request that started it logged ``started``)."""
        async with self.core.db.session() as s:
            owner = await s.get(User, task["user_id"]) if task.get("user_id") is not None else None
            s.add(entry(owner.username if owner else "", str(task.get("kind", "")).replace("_", ".", 1),
                        f"{task.get('host_name')}/{task.get('vm_uuid')}", str(task.get("state", "")),
                        f"task {task.get('id')}: {task.get('message')}"))
