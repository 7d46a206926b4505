"""System figures, the audit log, engines and the overall status as the contract shows them."""

from __future__ import annotations

from typing import Any

from idcs_core.plugins import Engine
from idcs_core.services.audit import AuditEntry
from idcs_core.services.host_options import EngineOptions
from idcs_core.services.hosts import HostView
from idcs_core.services.system import SystemStats


def stats(s: SystemStats) -> dict[str, Any]:
    """Counts, then usage (cpu, memory, disk percent) and where the usage comes from.
    (Built field by field, not with ``asdict``: this is the hottest cheap read.)"""
    return {"hosts_count": s.hosts_count, "hosts_online": s.hosts_online, "vms_count": s.vms_count,
            "running_vm_count": s.running_vm_count, "users_count": s.users_count, "cpu_usage": s.cpu_usage,
            "memory_usage": s.memory_usage, "disk_usage": s.disk_usage, "usage_source": s.usage_source}


def audit_entries(entries: list[AuditEntry]) -> list[dict[str, Any]]:
    return [dict(vars(e)) for e in entries]  # fields in order, all plain values


def engine(e: Engine, options: EngineOptions) -> dict[str, Any]:
    """An installed engine: version, capabilities, title/description, and the host options it declares."""
    return {"name": e.name, "distribution": e.dist, "version": e.version, "capabilities": e.capabilities,
            **{k: v for k, v in e.description.items() if k in ("title", "description")},
            "options": options.public(), "options_typed": options.typed}


def overall_status(hosts: list[HostView]) -> dict[str, Any]:
    """The billing dialect's connection test: this server is up; its hosts online and offline."""
    online = sum(1 for h in hosts if h.online)
    return {"status": "online", "hosts_count": len(hosts), "hosts_online": online,
            "hosts_offline": len(hosts) - online}
