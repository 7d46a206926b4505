"""The host options this engine understands (typed), and reading them with their defaults."""

from __future__ import annotations

from dataclasses import dataclass

from idcs_core.enginekit import option_bool, option_number, option_values
from idcs_core.types import HostOption, HostSpec, OptionType

OPTIONS: list[HostOption] = [
    HostOption("verify_tls", OptionType.BOOL, True,
               "verify the host's TLS certificate; false accepts a self-signed one"),
    HostOption("datacenter", OptionType.STR, "", "vCenter: the datacenter to use (empty: the first)"),
    HostOption("resource_pool", OptionType.STR, "",
               "vCenter: cluster, host or resource pool new VMs go to (empty: the first)"),
    HostOption("datastore", OptionType.STR, "",
               "datastore for new disks (empty: the one with most free space)"),
    HostOption("network", OptionType.STR, "", "port group new VMs connect to (empty: the first)"),
    HostOption("timeout", OptionType.INT, 15, "seconds one call to the host may take"),
    HostOption("console_address", OptionType.STR, "",
               "address the VMs' VNC consoles are reached at (empty: the ESXi host's own)"),
    HostOption("vnc_ports", OptionType.STR, "",
               "first-last port range: new VMs get a VNC console on a free port of it (empty: none)"),
]

@dataclass(frozen=True)
class Options:
    """A host's options with their defaults applied."""

    verify_tls: bool
    datacenter: str
    resource_pool: str
    datastore: str
    network: str
    timeout: int
    console_address: str
    vnc_ports: tuple[int, int] | None


def read_options(host: HostSpec) -> Options:
    """The host's options, defaults filled in; a yes/no or number option that is neither is a
    ``BadRequest`` naming it (the core validates typed options before they get here)."""
    raw = option_values(OPTIONS, host.options)

    def text(name: str) -> str:
        value = raw.get(name)
        return str(value).strip() if value is not None else ""

    timeout = option_number("timeout", raw["timeout"] or 15, int)  # 0 meant the default before
    return Options(verify_tls=option_bool("verify_tls", raw["verify_tls"], True), datacenter=text("datacenter"),
                   resource_pool=text("resource_pool"), datastore=text("datastore"), network=text("network"),
                   timeout=max(1, timeout), console_address=text("console_address"),
                   vnc_ports=port_range(text("vnc_ports")))


def port_range(text: str) -> tuple[int, int] | None:
    """``"5900-5999"`` -> (5900, 5999); empty or malformed -> None (no VNC consoles)."""
    first, _, last = text.partition("-")
    try:
        low, high = int(first), int(last or first)
    except ValueError:
        return None
    if not 1 <= low <= high <= 65535:
        return None
    return low, high
