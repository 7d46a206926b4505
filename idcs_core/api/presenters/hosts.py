"""Hosts as the contract shows them (``/api/server/detail``, create, update, status)."""

from __future__ import annotations

from typing import Any

from idcs_core.services.hosts import HostView


def host(h: HostView) -> dict[str, Any]:
    """A host with its live status and usage (null while offline); never its password."""
    st = h.status
    return {
        "server_name": h.server_name,
        "server_type": h.server_type,
        "server_addr": h.server_addr,
        "server_user": h.server_user,
        "server_area": h.server_area,
        "enabled": h.enabled,
        "status": "online" if h.online else "offline",
        "error": h.error or None,
        "vms_count": h.vms_count,
        "engine_vms_count": st.vms_count if st else None,
        "cpu_usage": st.cpu_usage if st else None,
        "memory_usage": st.memory_usage if st else None,
        "disk_usage": st.disk_usage if st else None,
        "version": st.version if st else None,
        "config": h.config,
        "options": h.options,
        "created_at": h.created_at,
    }


def hosts(items: list[HostView], keyed: bool) -> list[dict[str, Any]] | dict[str, dict[str, Any]]:
    """The host list: a list (the contract), or ``keyed`` by server_name (the billing dialect)."""
    if keyed:
        return {h.server_name: host(h) for h in items}
    return [host(h) for h in items]
