"""Hosts' status history: at most one usage sample per host per ``usage_sample_seconds``, a day kept.

A sample is taken when the core asks a host for its status anyway (host list, host detail,
the panel's dashboard, a billing system's polling) and when a host is added, like the VMs'
usage history: no background polling of its own, so hosts nobody looks at are not asked more
often than before (and tests counting engine calls see none they did not cause). The web
panel's dashboard charts it (``/api/server/history/<hs>``).

Several nodes on one PostgreSQL each remember their own last sample; before writing one, a node
takes the host's advisory lock for the transaction and skips the sample when another node wrote
one this interval, so the history keeps one sample per interval whichever nodes are asked.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, select, text

from idcs_core.db.models import Host, HostSample, utcnow
from idcs_core.services.lookup import get_host
from idcs_core.types import HostStatus

if TYPE_CHECKING:
    from idcs_core.context import CoreContext

log = logging.getLogger("idcs.hosts")
KEEP = timedelta(days=1)
SAMPLE_LOCK = 7_193_020  # first key of the per-host advisory lock (the second is the host id)


class HostHistory:
    """Records a host's status at most once per interval (remembered in memory, per host)."""

    def __init__(self, core: CoreContext) -> None:
        self.core = core
        # by host id and creation time: SQLite gives a new host the id of one just deleted
        self._last: dict[tuple[int, datetime], float] = {}

    def interval(self) -> float:
        return float(self.core.settings.get("usage_sample_seconds"))

    async def observe(self, host: Host, status: HostStatus | None) -> None:
        """Keep ``status`` (None: offline) as the host's sample unless one was taken this interval."""
        now = time.monotonic()
        key, host_id = (host.id, host.created_at), host.id
        if now - self._last.get(key, float("-inf")) < self.interval():
            return
        self._last[key] = now
        online = status is not None and status.online
        try:
            async with self.core.db.session() as s:
                ts = utcnow()
                if self.core.db.shared and await self._taken_elsewhere(s, host_id, ts):
                    return
                s.add(HostSample(host_id=host_id, ts=ts, online=online,
                                 cpu_usage=status.cpu_usage if online and status else None,
                                 memory_usage=status.memory_usage if online and status else None,
                                 disk_usage=status.disk_usage if online and status else None))
                await s.execute(delete(HostSample).where(HostSample.host_id == host_id, HostSample.ts < ts - KEEP))
        except Exception:  # a sample lost (host deleted meanwhile, database away) must not fail a status call
            log.debug("recording a status sample of host %s failed", host_id, exc_info=True)

    async def _taken_elsewhere(self, s: Any, host_id: int, ts: datetime) -> bool:
        """PostgreSQL: lock the host's samples for this transaction; True when another node took
        one within this interval."""
        await s.execute(text("SELECT pg_advisory_xact_lock(:a, :b)"), {"a": SAMPLE_LOCK, "b": host_id})
        last = (await s.execute(select(func.max(HostSample.ts)).where(HostSample.host_id == host_id))).scalar()
        return last is not None and (ts - last).total_seconds() < self.interval()


async def history(core: CoreContext, hs_name: str, minutes: int) -> list[dict[str, Any]]:
    """The host's samples of the last ``minutes``, oldest first."""
    since = utcnow() - timedelta(minutes=minutes)
    async with core.db.session() as s:
        host = await get_host(s, hs_name)
        rows = (await s.execute(select(HostSample).where(HostSample.host_id == host.id, HostSample.ts >= since)
                                .order_by(HostSample.ts))).scalars()
        return [{"time": r.ts, "timestamp": int(r.ts.replace(tzinfo=UTC).timestamp()),
                 "status": "online" if r.online else "offline", "cpu_usage": r.cpu_usage,
                 "memory_usage": r.memory_usage, "disk_usage": r.disk_usage} for r in rows]
