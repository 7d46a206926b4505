"""Turning LXD's instance records into ``VMInfo``: sizes, limits, status words, addresses.

Pure functions over the JSON LXD returns, so they are shared by every hook and
easy to test without a daemon.
"""

from __future__ import annotations

import re
from typing import Any

from idcs_core.types import VMInfo, VMStatus
from idcs_lxd.naming import vm_uuid_of

MIB = 1024 * 1024
GIB = 1024 * MIB

# Config keys this engine writes on the instances it creates.
KEY_OS_NAME = "user.idcs.os_name"
KEY_VM_NAME = "user.idcs.vm_name"

_UNITS = {
    "": 1, "b": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "pb": 10**15, "eb": 10**18,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "pib": 2**50, "eib": 2**60,
}
_SIZE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$")

# LXD status word -> contract status word.
_STATUS = {"running": VMStatus.RUNNING, "frozen": VMStatus.PAUSED, "freezing": VMStatus.PAUSED}


def parse_bytes(value: str | int | None) -> int | None:
    """``"512MiB"`` -> 536870912; ``"1GB"`` -> 10**9; percentages and junk -> None."""
    if value is None or value == "":
        return None
    if isinstance(value, int):
        return value
    match = _SIZE_RE.match(str(value))
    if not match:
        return None
    unit = _UNITS.get(match.group(2).lower())
    return None if unit is None else int(float(match.group(1)) * unit)


def parse_cpus(value: str | None) -> int | None:
    """``limits.cpu``: a count (``"2"``) or a CPU set (``"0-3"``, ``"0,2"``) -> number of CPUs."""
    if not value:
        return None
    value = str(value).strip()
    if value.isdigit():
        return int(value)
    count = 0
    for part in value.split(","):
        if "-" in part:
            low, _, high = part.partition("-")
            if not (low.strip().isdigit() and high.strip().isdigit()):
                return None
            count += int(high) - int(low) + 1
        elif part.strip().isdigit():
            count += 1
        else:
            return None
    return count or None


def status_word(lxd_status: str) -> str:
    """``Running`` -> running, ``Frozen`` -> paused, everything else -> stopped."""
    return str(_STATUS.get((lxd_status or "").lower(), VMStatus.STOPPED))


def root_device(inst: dict[str, Any]) -> dict[str, Any]:
    """The instance's root disk device (expanded: profile devices included)."""
    devices = inst.get("expanded_devices") or inst.get("devices") or {}
    for device in devices.values():
        if device.get("type") == "disk" and device.get("path") == "/":
            return dict(device)
    return {}


def addresses(state: dict[str, Any] | None, *, include_local: bool = False) -> list[dict[str, Any]]:
    """Global-scope addresses from an instance state: dicts with address, family, nic, hwaddr."""
    found: list[dict[str, Any]] = []
    for nic, iface in ((state or {}).get("network") or {}).items():
        if iface.get("type") == "loopback" and not include_local:
            continue
        for addr in iface.get("addresses") or []:
            if not include_local and addr.get("scope") != "global":
                continue
            found.append({"address": addr.get("address", ""), "family": addr.get("family", "inet"),
                          "nic": nic, "hwaddr": iface.get("hwaddr", ""), "netmask": addr.get("netmask", "")})
    return found


def memory_mb(inst: dict[str, Any]) -> int | None:
    value = parse_bytes((inst.get("expanded_config") or inst.get("config") or {}).get("limits.memory"))
    return None if value is None else round(value / MIB)


def disk_gb(inst: dict[str, Any]) -> int | None:
    value = parse_bytes(root_device(inst).get("size"))
    return None if value is None else round(value / GIB)


def to_vminfo(inst: dict[str, Any], state: dict[str, Any] | None = None, *,
              cpu_usage: float | None = None, host_memory: int | None = None,
              extra: dict[str, Any] | None = None) -> VMInfo:
    """Build the ``VMInfo`` of an instance record (``GET /1.0/instances/<n>``) and its state."""
    config = inst.get("expanded_config") or inst.get("config") or {}
    lxd_status = (state or {}).get("status") or inst.get("status") or ""
    memory = (state or {}).get("memory") or {}
    limit = parse_bytes(config.get("limits.memory")) or memory.get("total") or host_memory
    mem_usage = None
    if limit and memory.get("usage") is not None and status_word(lxd_status) != VMStatus.STOPPED:
        mem_usage = round(min(100.0, memory["usage"] * 100.0 / limit), 2)
    os_name = config.get(KEY_OS_NAME) or config.get("image.description") or config.get("image.os")
    details: dict[str, Any] = {
        "instance": inst["name"],
        "type": inst.get("type", "container"),
        "lxd_status": lxd_status,
        "architecture": inst.get("architecture"),
        "created_at": inst.get("created_at"),
        "profiles": inst.get("profiles", []),
        "image": {k.removeprefix("image."): v for k, v in config.items() if k.startswith("image.")},
        "storage_pool": root_device(inst).get("pool"),
    }
    if state and state.get("pid"):
        details["pid"] = state["pid"]
    details.update(extra or {})
    return VMInfo(
        vm_uuid=vm_uuid_of(inst),
        status=status_word(lxd_status),
        power_state=lxd_status,
        vm_name=config.get(KEY_VM_NAME) or inst.get("description") or None,
        os_name=os_name,
        cpu_num=parse_cpus(config.get("limits.cpu")),
        ram_num=memory_mb(inst),
        hdd_num=disk_gb(inst),
        cpu_usage=cpu_usage,
        memory_usage=mem_usage,
        ip_addresses=[a["address"] for a in addresses(state)],
        extra=details,
    )
