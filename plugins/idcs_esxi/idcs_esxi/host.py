"""Host status: health, CPU/memory usage (quickStats), datastore usage, VM count, product — one round trip."""

from __future__ import annotations

from pyVmomi import vim

from idcs_core.types import HostStatus
from idcs_esxi.client import Connection
from idcs_esxi.props import read_views

HOST_PATHS = ["name", "summary.quickStats.overallCpuUsage", "summary.quickStats.overallMemoryUsage",
              "summary.hardware.cpuMhz", "summary.hardware.numCpuCores", "summary.hardware.memorySize",
              "runtime.connectionState"]


def host_status(conn: Connection) -> HostStatus:
    """The scope's hosts and datastores summed up, and its VM count (templates excluded), in one request."""
    rows = read_views(conn, (conn.host_view, vim.HostSystem, HOST_PATHS),
                      (conn.vm_view, vim.VirtualMachine, ["config.template"]),
                      (conn.ds_view, vim.Datastore, ["summary.capacity", "summary.freeSpace", "summary.accessible"]))
    cpu_used = cpu_total = mem_used = mem_total = disk_total = disk_free = 0.0
    hosts = vms = 0
    for row in rows:
        if isinstance(row.obj, vim.HostSystem):
            hosts += 1
            cpu_used += float(row.get("summary.quickStats.overallCpuUsage") or 0)
            cpu_total += float(row.get("summary.hardware.cpuMhz") or 0) * float(
                row.get("summary.hardware.numCpuCores") or 0)
            mem_used += float(row.get("summary.quickStats.overallMemoryUsage") or 0) * 1024 * 1024
            mem_total += float(row.get("summary.hardware.memorySize") or 0)
        elif isinstance(row.obj, vim.Datastore):
            if row.get("summary.accessible", True):
                disk_total += float(row.get("summary.capacity") or 0)
                disk_free += float(row.get("summary.freeSpace") or 0)
        elif not row.get("config.template"):
            vms += 1
    about = conn.content.about
    return HostStatus(
        online=True,
        cpu_usage=round(min(100.0, 100 * cpu_used / cpu_total), 1) if cpu_total else None,
        memory_usage=round(min(100.0, 100 * mem_used / mem_total), 1) if mem_total else None,
        disk_usage=round(min(100.0, 100 * (disk_total - disk_free) / disk_total), 1) if disk_total else None,
        vms_count=vms,
        version=str(about.fullName),
        extra={"product": str(about.name), "api_type": str(about.apiType), "api_version": str(about.apiVersion),
               "hosts": hosts, "datacenter": conn.datacenter_name, "resource_pool": conn.pool_name},
    )
