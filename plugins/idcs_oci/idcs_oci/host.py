"""Host status: one ``info()`` round trip, plus the machine's own counters when it is local.

Docker's API reports no CPU, memory or disk *usage* of the host. When the
daemon listens on a unix socket of this machine, the numbers come from this
kernel (``/proc/stat``, ``/proc/meminfo``) and from the file system holding
Docker's data root. For a remote daemon they stay ``None``; ``extra`` then
carries what Docker does know (CPUs, memory, memory promised to containers).
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from idcs_core.types import HostStatus
from idcs_oci import forwarders
from idcs_oci.client import Conn, engine_kind, is_local_socket

_cpu_lock = threading.Lock()
_last_cpu: tuple[float, int, int] | None = None  # (when, busy jiffies, total jiffies)


def _cpu_jiffies() -> tuple[int, int]:
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])
    return total - idle, total


def local_cpu_percent() -> float:
    """Busy share of all CPUs since the previous call (or over 0.2 s on the first call)."""
    global _last_cpu
    with _cpu_lock:
        previous = _last_cpu
        if previous is None or time.monotonic() - previous[0] > 300:
            busy0, total0 = _cpu_jiffies()
            time.sleep(0.2)
        else:
            _, busy0, total0 = previous
        busy, total = _cpu_jiffies()
        _last_cpu = (time.monotonic(), busy, total)
    if total <= total0:
        return 0.0
    return round(100.0 * (busy - busy0) / (total - total0), 1)


def local_memory_percent() -> float | None:
    values: dict[str, int] = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, _, rest = line.partition(":")
            values[key] = int(rest.split()[0])
    total, available = values.get("MemTotal"), values.get("MemAvailable")
    if not total or available is None:
        return None
    return round(100.0 * (total - available) / total, 1)


def disk_percent(path: str) -> float | None:
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    used = st.f_blocks - st.f_bfree
    if used + st.f_bavail <= 0:
        return None
    return round(100.0 * used / (used + st.f_bavail), 1)  # as df's Use%: reserved blocks left out


def status(conn: Conn) -> HostStatus:
    info: dict[str, Any] = conn.client.info()
    extra: dict[str, Any] = {
        "engine": engine_kind(conn.facts.get("version") or {}, info),
        "api_version": conn.api.api_version,
        "ncpu": info.get("NCPU"),
        "mem_total": info.get("MemTotal"),
        "containers_running": info.get("ContainersRunning"),
        "containers_paused": info.get("ContainersPaused"),
        "containers_stopped": info.get("ContainersStopped"),
        "images": info.get("Images"),
        "storage_driver": info.get("Driver"),
        "docker_root_dir": info.get("DockerRootDir"),
        "os": info.get("OperatingSystem"),
        "kernel": info.get("KernelVersion"),
        "local": False,
    }
    containers = info.get("Containers")
    if containers:  # NAT forwarders are containers, not VMs
        containers -= forwarders.count(conn)
    result = HostStatus(online=True, vms_count=containers, version=info.get("ServerVersion"),
                        extra=extra)
    if is_local_socket(conn):
        extra["local"] = True
        result.cpu_usage = local_cpu_percent()
        result.memory_usage = local_memory_percent()
        root = info.get("DockerRootDir")
        result.disk_usage = disk_percent(root) if root else None
    return result
