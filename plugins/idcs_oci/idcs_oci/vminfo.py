"""What Docker says about a container, as a ``VMInfo``."""

from __future__ import annotations

import math
from typing import Any

from idcs_core.types import IPAddress, VMInfo, VMStatus
from idcs_oci import naming
from idcs_oci.images import canonical

_MB = 1024 * 1024


def status_word(docker_state: str) -> str:
    """running / paused / stopped from Docker's State.Status (created, exited, dead... are stopped)."""
    if docker_state in ("running", "restarting"):
        return VMStatus.RUNNING.value
    if docker_state == "paused":
        return VMStatus.PAUSED.value
    return VMStatus.STOPPED.value


def _os_name(labels: dict[str, str], image: str) -> str:
    """The image the VM was made from, by its one name (``images.canonical``: Podman's ``docker.io/...``
    and a label of an earlier release read as Docker's short name)."""
    name = labels.get(naming.OS_NAME) or image
    return canonical(name) if name and not name.startswith("sha256:") else name


def _hdd(labels: dict[str, str], storage_opt: dict[str, str] | None) -> tuple[int | None, dict[str, Any]]:
    """(hdd_num if enforced, extra keys). Not enforced: ``hdd_num`` is None, the request is in extra."""
    size = (storage_opt or {}).get("size")
    if size:
        gb = size_gb(size)
        return gb, {"hdd_enforced": True}
    requested = labels.get(naming.HDD_NUM)
    return None, {"hdd_enforced": False, "hdd_requested_gb": int(requested) if requested else None}


def size_gb(size: str) -> int | None:
    text = size.strip().upper().rstrip("B")
    units = {"K": 1 / 1024**2, "M": 1 / 1024, "G": 1, "T": 1024}
    try:
        if text and text[-1] in units:
            return math.ceil(float(text[:-1]) * units[text[-1]])
        return math.ceil(int(text) / 1024**3)
    except ValueError:
        return None


def ip_addresses(attrs: dict[str, Any]) -> list[IPAddress]:
    """The container's addresses on each of its networks."""
    result: list[IPAddress] = []
    networks = (attrs.get("NetworkSettings") or {}).get("Networks") or {}
    for net, ep in networks.items():
        mac = ep.get("MacAddress") or ""
        if ep.get("IPAddress"):
            result.append(IPAddress(ep["IPAddress"], 4, net, mac,
                                    {"prefix": ep.get("IPPrefixLen"), "gateway": ep.get("Gateway")}))
        if ep.get("GlobalIPv6Address"):
            result.append(IPAddress(ep["GlobalIPv6Address"], 6, net, mac, {
                "prefix": ep.get("GlobalIPv6PrefixLen"), "gateway": ep.get("IPv6Gateway")}))
    return result


def from_inspect(attrs: dict[str, Any], stats: dict[str, Any] | None = None) -> VMInfo:
    """A VMInfo from ``docker inspect`` output (and a non-streaming stats sample when running)."""
    config = attrs.get("Config") or {}
    host_config = attrs.get("HostConfig") or {}
    labels = config.get("Labels") or {}
    state = (attrs.get("State") or {}).get("Status", "")
    nano = host_config.get("NanoCpus") or 0
    memory = host_config.get("Memory") or 0
    hdd_num, hdd_extra = _hdd(labels, host_config.get("StorageOpt"))
    name = attrs.get("Name", "").lstrip("/")
    info = VMInfo(
        vm_uuid=labels.get(naming.VM_UUID) or name,
        status=status_word(state),
        power_state=state,
        vm_name=labels.get(naming.VM_NAME) or name,
        os_name=_os_name(labels, config.get("Image", "")),
        cpu_num=math.ceil(nano / 1e9) if nano else None,
        ram_num=memory // _MB if memory else None,
        hdd_num=hdd_num,
        ip_addresses=[ip.address for ip in ip_addresses(attrs)],
        extra={
            "container_id": attrs.get("Id", ""),
            "managed": labels.get(naming.MANAGED) == "1",
            "image_id": attrs.get("Image", ""),
            "started_at": (attrs.get("State") or {}).get("StartedAt"),
            "restart_policy": (host_config.get("RestartPolicy") or {}).get("Name"),
            "ports": port_summary(host_config.get("PortBindings") or {}),
            "mounts": [{"type": m.get("Type"), "name": m.get("Name") or m.get("Source"),
                        "target": m.get("Destination")} for m in attrs.get("Mounts") or []],
            **hdd_extra,
        },
    )
    if stats:
        info.cpu_usage, info.memory_usage = usage(stats, nano)
    return info


def from_summary(item: dict[str, Any]) -> VMInfo:
    """A VMInfo from one entry of the container list (no limits there: those stay None)."""
    labels = item.get("Labels") or {}
    name = (item.get("Names") or ["/"])[0].lstrip("/")
    state = item.get("State", "")
    networks = (item.get("NetworkSettings") or {}).get("Networks") or {}
    ips = [ep["IPAddress"] for ep in networks.values() if ep.get("IPAddress")]
    ips += [ep["GlobalIPv6Address"] for ep in networks.values() if ep.get("GlobalIPv6Address")]
    return VMInfo(
        vm_uuid=labels.get(naming.VM_UUID) or name,
        status=status_word(state),
        power_state=state,
        vm_name=labels.get(naming.VM_NAME) or name,
        os_name=_os_name(labels, item.get("Image", "")),
        ip_addresses=ips,
        extra={"container_id": item.get("Id", ""), "managed": labels.get(naming.MANAGED) == "1",
               "status_text": item.get("Status", "")},
    )


def port_summary(bindings: dict[str, Any]) -> list[str]:
    out = []
    for key, binds in sorted(bindings.items()):
        for b in binds or []:
            out.append(f"{b.get('HostIp') or '0.0.0.0'}:{b.get('HostPort')}->{key}")
    return out


def usage(stats: dict[str, Any], nano_cpus: int) -> tuple[float | None, float | None]:
    """(CPU percent of the VM's own vCPUs, memory percent of its limit) from a stats sample."""
    cpu_percent = None
    cpu, pre = stats.get("cpu_stats") or {}, stats.get("precpu_stats") or {}
    try:
        cpu_delta = cpu["cpu_usage"]["total_usage"] - pre["cpu_usage"]["total_usage"]
        system_delta = cpu["system_cpu_usage"] - pre["system_cpu_usage"]
        online = cpu.get("online_cpus") or len(cpu["cpu_usage"].get("percpu_usage") or [1])
        if system_delta > 0:
            vcpus = nano_cpus / 1e9 if nano_cpus else online
            cpu_percent = round(min(100.0, 100.0 * cpu_delta / system_delta * online / vcpus), 1)
    except (KeyError, TypeError):
        pass
    mem_percent = None
    mem = stats.get("memory_stats") or {}
    if mem.get("usage") and mem.get("limit"):
        detail = mem.get("stats") or {}
        cache = detail.get("total_inactive_file", detail.get("inactive_file", detail.get("cache", 0)))
        mem_percent = round(min(100.0, 100.0 * max(mem["usage"] - cache, 0) / mem["limit"]), 1)
    return cpu_percent, mem_percent
