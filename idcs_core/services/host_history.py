"""Hosts' status history: at most one usage sample per host per ``usage_sample_seconds``, a day kept.

A sample is taken when the core asks a host for its status anyway (host list, host detail,
the panel's dashboard, a billing system's polling) and when a host is added, like the VMs'
usage history: no background polling of its own, so hosts nobody looks at are not asked more
often than before (and tests counting engine calls see none they did not cause). On PostgreSQL
the nodes of a cluster share the interval (an advisory lock per host, then the latest sample's
time), so several nodes do not take several samples. The web
panel's dashboard charts it (``/api/server/history/<hs>``).
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
                if not self.core.db.is_sqlite:  # several nodes: one sample per interval for the cluster
                    await s.execute(text("SELECT pg_advisory_xact_lock(hashtext(current_schema() || :k))"),
                                    {"k": f":host-sample:{host_id}"})
                    latest = (await s.execute(select(func.max(HostSample.ts)).where(
                        HostSample.host_id == host_id))).scalar()
                    if latest is not None and (ts - latest).total_seconds() < self.interval():
                        return  # another node took this interval's sample
                s.add(HostSample(host_id=host_id, ts=ts, online=online,
                                 cpu_usage=status.cpu_usage if online and status else None,
                                 memory_usage=status.memory_usage if online and status else None,
                                 disk_usage=status.disk_usage if online and status else None))
                await s.execute(delete(HostSample).where(HostSample.host_id == host_id, HostSample.ts < ts - KEEP))
        except Exception:  # a sample lost (host deleted meanwhile, database away) must not fail a status call
            log.debug("recording a status sample of host %s failed", host_id, exc_info=True)


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
