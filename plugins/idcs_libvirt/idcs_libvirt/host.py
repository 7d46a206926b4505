"""Host options (typed, with defaults) and the host's live status."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

import libvirt

from idcs_core.enginekit import option_number, option_values
from idcs_core.types import HostOption, HostSpec, HostStatus, OptionType

OPTIONS = [
    HostOption("pool", OptionType.STR, "default", "libvirt storage pool holding images, ISOs and VM disks"),
    HostOption("network", OptionType.STR, "default", "libvirt network (NAT) new VMs are attached to"),
    HostOption("vnc_listen", OptionType.STR, "127.0.0.1",
               "address QEMU's VNC server listens on (the core connects there; keep it loopback or private)"),
    HostOption("console_address", OptionType.STR, "",
               "address the core reaches the VNC port at (default: 127.0.0.1 for local URIs, else the URI's host)"),
    HostOption("stop_timeout", OptionType.INT, 30,
               "seconds an ACPI shut-down may take before the VM is powered off"),
    HostOption("nat_table", OptionType.STR, "idcs_libvirt", "nftables table (family ip) the engine owns for "
               "port forwards (local hosts only)"),
]


@dataclass(frozen=True)
class Settings:
    """The host's options with defaults applied."""

    pool: str
    network: str
    vnc_listen: str
    console_address: str
    stop_timeout: int
    nat_table: str
    is_local: bool


def is_local_uri(uri: str) -> bool:
    parts = urlsplit(uri or "qemu:///system")
    return "+" not in parts.scheme and parts.hostname in (None, "", "localhost")


def settings(host: HostSpec) -> Settings:
    """Read ``host.options``: unknown keys ignored, defaults applied, a stop_timeout that is no number
    a ``BadRequest`` naming it (the core validates typed options before they get here)."""
    opts = option_values(OPTIONS, host.options)
    local = is_local_uri(host.addr)
    console = str(opts["console_address"]) or ("127.0.0.1" if local else (urlsplit(host.addr).hostname or ""))
    stop_timeout = option_number("stop_timeout", opts["stop_timeout"], int)
    return Settings(pool=str(opts["pool"]), network=str(opts["network"]), vnc_listen=str(opts["vnc_listen"]),
                    console_address=console, stop_timeout=max(1, stop_timeout), nat_table=str(opts["nat_table"]),
                    is_local=local)


def _version(number: int) -> str:
    return f"{number // 1000000}.{number // 1000 % 1000}.{number % 1000}"


def host_status(conn: libvirt.virConnect) -> HostStatus:
    """Usage and versions in a few round trips (node info, memory and CPU stats, domain count)."""
    _model, mem_mb, cpus, *_ = conn.getInfo()
    mem = conn.getMemoryStats(libvirt.VIR_NODE_MEMORY_STATS_ALL_CELLS, 0)
    total = mem.get("total") or mem_mb * 1024
    free = mem.get("free", 0) + mem.get("buffers", 0) + mem.get("cached", 0)
    cpu = conn.getCPUStats(libvirt.VIR_NODE_CPU_STATS_ALL_CPUS, 0)
    busy = sum(cpu.get(k, 0) for k in ("kernel", "user"))
    allt = busy + cpu.get("idle", 0) + cpu.get("iowait", 0)
    count = conn.numOfDomains() + conn.numOfDefinedDomains()
    return HostStatus(
        online=True,
        cpu_usage=round(100.0 * busy / allt, 1) if allt else None,
        memory_usage=round(100.0 * (total - free) / total, 1) if total else None,
        vms_count=count,
        version=f"libvirt {_version(conn.getLibVersion())}, QEMU {_version(conn.getVersion())}",
        extra={"cpus": cpus, "memory_mb": mem_mb, "hostname": conn.getHostname()},
    )
