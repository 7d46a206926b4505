"""System-wide figures: counts, usage, engines."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import psutil
from sqlalchemy import func, select

from idcs_core.db.models import VM, User
from idcs_core.services.hosts import host_rows

if TYPE_CHECKING:
    from idcs_core.context import CoreContext


def _mean(values: list[float | None]) -> float | None:
    known = [float(v) for v in values if v is not None]
    return round(sum(known) / len(known), 2) if known else None


MACHINE_TTL = 2.0  # seconds this machine's usage is reused: CPU percent is measured between two samples


class MachineUsage:
    """This machine's CPU / memory / disk percent, sampled at most every ``MACHINE_TTL`` seconds.

    ``psutil.cpu_percent(interval=None)`` measures since its previous call: sampled on every
    request it would read 0 under load; sampled every couple of seconds it means something.
    """

    def __init__(self, data_dir: str) -> None:
        self.data_dir = data_dir
        self._sampled = -MACHINE_TTL
        self._value: dict[str, float] = {}
        self._refresh: asyncio.Future[dict[str, float]] | None = None
        psutil.cpu_percent(interval=None)  # the first call only starts the measurement

    async def get(self) -> dict[str, float]:
        """The latest sample. A stale one starts ONE refresh in a worker thread and is answered
        meanwhile (concurrent requests never each wait for, or start, a sample of their own);
        only the very first call waits."""
        if time.monotonic() - self._sampled >= MACHINE_TTL and (self._refresh is None or self._refresh.done()):
            self._sampled = time.monotonic()
            self._refresh = asyncio.ensure_future(asyncio.to_thread(self._sample))
            self._refresh.add_done_callback(self._keep)
        if not self._value and self._refresh is not None:
            await asyncio.shield(self._refresh)
        return self._value

    def _keep(self, refresh: asyncio.Future[dict[str, float]]) -> None:
        if not refresh.cancelled() and refresh.exception() is None:
            self._value = refresh.result()

    def _sample(self) -> dict[str, float]:
        return {"cpu_usage": float(psutil.cpu_percent(interval=None)),
                "memory_usage": float(psutil.virtual_memory().percent),
                "disk_usage": float(psutil.disk_usage(self.data_dir).percent)}


async def _counts(core: CoreContext) -> dict[str, int]:
    async with core.db.session() as s:
        running = (await s.execute(select(func.count(VM.id)).where(VM.status == "running"))).scalar_one()
        users_count = (await s.execute(select(func.count(User.id)))).scalar_one()
    return {"running_vm_count": running, "users_count": users_count}


@dataclass(frozen=True)
class SystemStats:
    """Counts, and usage in percent averaged over the online hosts (``usage_source`` ``hosts``) or,
    with none reporting, this server's own (``server``)."""

    hosts_count: int
    hosts_online: int
    vms_count: int
    running_vm_count: int
    users_count: int
    cpu_usage: float
    memory_usage: float
    disk_usage: float
    usage_source: str


async def stats(core: CoreContext) -> SystemStats:
    """Counts from the database; usage averaged over online hosts, else this machine's."""
    # the rows and counts come from memory until something is written; host usage is asked anew
    hosts, per_host = await host_rows(core)
    counts = await core.reads.get("stats", lambda: _counts(core)) | {"vms_count": sum(per_host.values())}
    statuses = [st for st, _err in await core.hosts.status_many(hosts) if st is not None]
    usage: dict[str, float | None] = {
        "cpu_usage": _mean([st.cpu_usage for st in statuses]),
        "memory_usage": _mean([st.memory_usage for st in statuses]),
        "disk_usage": _mean([st.disk_usage for st in statuses]),
    }
    source = "hosts"
    if usage["cpu_usage"] is None and usage["memory_usage"] is None:
        usage, source = dict(await core.machine.get()), "server"
    cpu, memory, disk = (float(usage.get(k) or 0.0) for k in ("cpu_usage", "memory_usage", "disk_usage"))
    return SystemStats(len(hosts), len(statuses), counts["vms_count"], counts["running_vm_count"],
                       counts["users_count"], cpu, memory, disk, source)
