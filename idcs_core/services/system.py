"""System-wide figures: counts, usage, engines."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import psutil
from sqlalchemy import func, select

from idcs_core.db.models import VM, Host, User

if TYPE_CHECKING:
    from idcs_core.context import CoreContext


def _mean(values: list[float | None]) -> float | None:
    known = [float(v) for v in values if v is not None]
    return round(sum(known) / len(known), 2) if known else None


def _this_machine(data_dir: str) -> dict[str, float]:
    return {"cpu_usage": float(psutil.cpu_percent(interval=None)),
            "memory_usage": float(psutil.virtual_memory().percent),
            "disk_usage": float(psutil.disk_usage(data_dir).percent)}


async def stats(core: CoreContext) -> dict[str, Any]:
    """Counts from the database; usage averaged over online hosts, else this machine's."""
    async with core.db.session() as s:
        hosts = list((await s.execute(select(Host))).scalars())
        vms_count = (await s.execute(select(func.count(VM.id)))).scalar_one()
        running = (await s.execute(select(func.count(VM.id)).where(VM.status == "running"))).scalar_one()
        users_count = (await s.execute(select(func.count(User.id)))).scalar_one()
    statuses = [st for st, _err in await core.hosts.status_many(hosts) if st is not None]
    usage: dict[str, Any] = {
        "cpu_usage": _mean([st.cpu_usage for st in statuses]),
        "memory_usage": _mean([st.memory_usage for st in statuses]),
        "disk_usage": _mean([st.disk_usage for st in statuses]),
        "usage_source": "hosts",
    }
    if usage["cpu_usage"] is None and usage["memory_usage"] is None:
        usage = await asyncio.to_thread(_this_machine, str(core.config.data_dir)) | {"usage_source": "server"}
    for key in ("cpu_usage", "memory_usage", "disk_usage"):
        usage[key] = float(usage[key]) if usage.get(key) is not None else 0.0
    return {"hosts_count": len(hosts), "hosts_online": len(statuses), "vms_count": vms_count,
            "running_vm_count": running, "users_count": users_count, **usage}
