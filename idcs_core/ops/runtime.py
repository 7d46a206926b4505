"""Starting and stopping the operations of one serving core (``core.ops``)."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from idcs_core.ops.live import LiveEvents
from idcs_core.ops.metrics import Metrics
from idcs_core.ops.schedules import BackupScheduler
from idcs_core.ops.traffic import TrafficSampler
from idcs_core.ops.webhooks import WebhookDispatcher, prune_deliveries

if TYPE_CHECKING:
    from idcs_core.context import CoreContext
    from idcs_core.ops.listener import EventListener

log = logging.getLogger("idcs.ops")

PRUNE_SECONDS = 24 * 3600.0
ORPHAN_SWEEP_SECONDS = 30.0


class Operations:
    """Webhooks, live events, metrics, backup schedules and traffic accounting of one server."""

    def __init__(self, core: CoreContext) -> None:
        loop = asyncio.get_running_loop()
        self.core = core
        self.webhooks = WebhookDispatcher(core, loop)
        self.live = LiveEvents(core, loop)
        self.metrics = Metrics(core, loop)
        self.scheduler = BackupScheduler(core)
        self.traffic = TrafficSampler(core)
        # names unique per core: tests run several servers in one process with one registry
        self._plugin_names: list[str] = []

    @classmethod
    async def start(cls, core: CoreContext) -> Operations:
        ops = cls(core)
        ops._register("webhooks", ops.webhooks)
        ops._register("live-events", ops.live)
        ops._register("metrics", ops.metrics)
        core.spawn(ops.scheduler.run())  # cancelled with the core's other background work
        core.spawn(ops.traffic.run())
        core.spawn(ops._prune_daily())
        core.leader.on_lead(ops._now_leading)  # the periodic work starts a round at once on a new leader
        resumed = await ops.webhooks.resume()
        if resumed:
            log.info("webhooks: %d pending deliveries resumed", resumed)
        if core.db.shared:
            core.spawn(ops._resume_orphans())
        return ops

    async def _now_leading(self) -> None:
        self.traffic.wake.set()

    async def _resume_orphans(self) -> None:
        """PostgreSQL: deliveries a dead node was sending are taken over by the others once its
        claim on them (``webhooks.claim_seconds``) has run out."""
        while True:
            await asyncio.sleep(ORPHAN_SWEEP_SECONDS)
            try:
                await self.webhooks.resume(overdue_only=True)
            except Exception:  # the database away for a moment: next round
                log.warning("webhooks: looking for orphaned deliveries failed", exc_info=True)

    async def _prune_daily(self) -> None:
        """The webhook delivery log keeps what the audit log keeps (``audit_keep_days``)."""
        while True:
            try:
                # once per cluster: the leading node prunes (on SQLite always this one)
                removed = await prune_deliveries(self.core) if self.core.leader.leads() else 0
                if removed:
                    log.info("webhooks: %d old deliveries removed from the log", removed)
            except Exception:  # the database away for a moment: next round
                log.exception("pruning the webhook delivery log failed")
            await asyncio.sleep(PRUNE_SECONDS)

    def _register(self, name: str, plugin: EventListener) -> None:
        unique = f"{name}@{id(self.core):x}"
        self.core.plugins.register_event_plugin(unique, plugin)
        self._plugin_names.append(unique)

    async def stop(self) -> None:
        for name in self._plugin_names:
            if self.core.plugins.events.has_plugin(name):
                self.core.plugins.events.unregister(name=name)
        if self.live._remote in self.core.bus.event_handlers:
            self.core.bus.event_handlers.remove(self.live._remote)
        await self.webhooks.close()
