"""Host options (typed, with defaults applied here until the core does it) and host status."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from idcs_core.enginekit import option_bool, option_number, option_values
from idcs_core.types import HostOption, HostSpec, HostStatus, OptionType

if TYPE_CHECKING:
    from idcs_vmware.client import Vmrest  # the client imports this module

OPTIONS: list[HostOption] = [
    HostOption("verify_tls", OptionType.BOOL, True, "verify vmrest's HTTPS certificate (vmrest's own is self-signed)"),
    HostOption("vmnet", OptionType.STR, "vmnet8", "the NAT network whose port forwarding NAT rules use"),
    HostOption("template_prefix", OptionType.STR, "template-",
               "VMs whose name starts with this are templates: offered as images, cloned on create, never listed"),
    HostOption("vnc_ports", OptionType.STR, "5900-5999", "range of VNC ports given to new VMs (first-last)"),
    HostOption("vnc_address", OptionType.STR, "",
               "address the core reaches the VMs' VNC ports at (empty: the host of server_addr)"),
    HostOption("pause_mode", OptionType.CHOICE, "suspend", "what S_PAUSE does: suspend (to disk) or pause (freeze)",
               choices=("pause", "suspend")),
    HostOption("timeout", OptionType.INT, 10, "seconds to wait for one vmrest answer"),
]


DEFAULT_PORT = 8697  # vmrest's default


def base_url(addr: str) -> str:
    """vmrest's base URL from ``server_addr``: ``https://`` when no scheme is given, port 8697
    when none is (``ws.lan`` -> ``https://ws.lan:8697``); a trailing slash is dropped."""
    text = addr.strip().rstrip("/")
    if "://" not in text:
        text = f"https://{text}"
    parts = urlsplit(text)
    if parts.port is None and parts.hostname:
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        text = parts._replace(netloc=f"{host}:{DEFAULT_PORT}").geturl()
    return text


@dataclass(frozen=True)
class Settings:
    """A host's options, parsed, with defaults for what is missing."""

    verify_tls: bool
    vmnet: str
    template_prefix: str
    vnc_first: int
    vnc_last: int
    vnc_address: str
    pause_mode: str
    timeout: float


def settings(host: HostSpec) -> Settings:
    """Parse ``host.options`` with defaults for what is missing; a yes/no or number option that is
    neither is a ``BadRequest`` naming it (the core validates typed options before they get here)."""
    opts = option_values(OPTIONS, host.options)
    first, _, last = str(opts["vnc_ports"]).partition("-")
    try:
        vnc_first, vnc_last = int(first), int(last or first)
    except ValueError:
        vnc_first, vnc_last = 5900, 5999
    mode = str(opts["pause_mode"])
    return Settings(
        verify_tls=option_bool("verify_tls", opts["verify_tls"], True),
        vmnet=str(opts["vmnet"]),
        template_prefix=str(opts["template_prefix"]),
        vnc_first=vnc_first, vnc_last=vnc_last,
        vnc_address=str(opts["vnc_address"]) or (urlsplit(base_url(host.addr)).hostname or "127.0.0.1"),
        pause_mode=mode if mode in ("pause", "suspend") else "suspend",
        timeout=option_number("timeout", opts["timeout"] or 10, float),  # 0 meant the default before
    )


async def host_status(api: Vmrest) -> HostStatus:
    """The host's status from one ``GET /api/vms``."""
    return status_from_list(await api.list_vms(), api.settings.template_prefix)


def status_from_list(vms: list[dict[str, Any]], template_prefix: str) -> HostStatus:
    """The host's status from one ``GET /api/vms`` answer."""
    from idcs_vmware.naming import is_template, vm_name

    templates = sum(is_template(vm_name(v["path"]), template_prefix) for v in vms)
    return HostStatus(online=True, vms_count=len(vms) - templates, extra={"templates": templates})
