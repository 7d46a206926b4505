"""Host status: health, usage, instance count, version, LXD or Incus.

One ``host_status`` costs four quick API calls: ``/1.0``, ``/1.0/resources``,
the storage pool's resources and the instance name list.

CPU usage: ``/1.0/resources`` has no CPU utilisation. Incus reports the load
average there (``load.Average1Min``); LXD 5.0 does not, so for a local daemon
(unix socket, same machine) the local load average is used, and for a remote
LXD the value is unknown (None). Either way it is load / threads * 100, capped
at 100: an approximation, named in ``extra["cpu_usage_source"]``.
"""

from __future__ import annotations

import os
from typing import Any

from pylxd import Client

from idcs_core.types import HostSpec, HostStatus
from idcs_lxd.client import parse_addr
from idcs_lxd.naming import is_internal
from idcs_lxd.storage import default_pool


def server_kind(client: Client) -> str:
    """``lxd`` or ``incus`` (from ``environment.server``)."""
    return str((client.host_info.get("environment") or {}).get("server") or "lxd").lower()


def _pct(used: float | None, total: float | None) -> float | None:
    if used is None or not total:
        return None
    return round(min(100.0, max(0.0, used * 100.0 / total)), 2)


def host_status(client: Client, host: HostSpec) -> HostStatus:
    info = client.api.get().json()["metadata"]  # also proves the daemon answers now
    client.host_info = info
    env: dict[str, Any] = info.get("environment") or {}
    resources = client.api.resources.get().json()["metadata"]
    threads = int((resources.get("cpu") or {}).get("total") or 0) or os.cpu_count() or 1
    memory = resources.get("memory") or {}

    cpu_usage, cpu_source = None, "unknown"
    load = resources.get("load") or {}
    if load.get("Average1Min") is not None:
        cpu_usage, cpu_source = _pct(float(load["Average1Min"]), threads), "server load average"
    elif parse_addr(host.addr).is_local:
        cpu_usage, cpu_source = _pct(os.getloadavg()[0], threads), "local load average"

    pool = default_pool(client, host)
    disk_usage, pool_info = None, {}
    if pool:
        space = (client.api.storage_pools[pool].resources.get().json()["metadata"] or {}).get("space") or {}
        disk_usage = _pct(space.get("used"), space.get("total"))
        pool_info = {"storage_pool": pool, "disk_used_bytes": space.get("used"),
                     "disk_total_bytes": space.get("total")}
    names = [n for n in client.api.instances.get().json()["metadata"]
             if not is_internal(n.rstrip("/").rsplit("/", 1)[-1])]  # helpers are not VMs

    return HostStatus(
        online=True,
        cpu_usage=cpu_usage,
        memory_usage=_pct(memory.get("used"), memory.get("total")),
        disk_usage=disk_usage,
        vms_count=len(names),
        version=str(env.get("server_version") or ""),
        extra={
            "server": server_kind(client),
            "server_name": env.get("server_name"),
            "api_version": info.get("api_version"),
            "kernel": env.get("kernel_version"),
            "driver": env.get("driver"),
            "driver_version": env.get("driver_version"),
            "cpu_threads": threads,
            "cpu_usage_source": cpu_source,
            "memory_total_bytes": memory.get("total"),
            "trusted": info.get("auth") == "trusted",
            **pool_info,
        },
    )
