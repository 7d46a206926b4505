"""Which address and port reach a VM from the reverse proxy (Caddy dials ``upstream``).

In this order:

1. the rule's ``lan_addr``, when given: ``lan_addr:lan_port`` (a normal user may only name
   one of the VM's own addresses; an administrator any);
2. a NAT rule of the VM forwarding TCP to ``lan_port``: the host's public address and that
   rule's host port. The public address is the host's ``public_addr``, else the host name of
   ``server_addr`` (``tcp://10.0.0.5:2376`` -> ``10.0.0.5``), else, for a host reached through
   a local unix socket, ``127.0.0.1``. This works wherever Caddy runs and survives the VM's
   restarts (a container may get a new address);
3. the VM's own address as the engine reports it (IPv4 first): ``address:lan_port``.

Without any of them the rule is refused (400) before anything is recorded.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from urllib.parse import urlsplit

LOOPBACK = "127.0.0.1"


def dial(address: str, port: int) -> str:
    """``host:port`` as Caddy dials it (IPv6 in brackets)."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def public_address(public_addr: str, server_addr: str) -> str:
    """Where the host's forwarded ports are reached from the proxy."""
    if public_addr.strip():
        return public_addr.strip()
    text = server_addr.strip()
    if not text or text.startswith(("unix:", "/", "npipe:")):
        return LOOPBACK
    parts = urlsplit(text if "://" in text else f"//{text}")
    try:
        host = parts.hostname
    except ValueError:
        host = None
    return host or LOOPBACK


def from_nat(forwards: Iterable[tuple[int, int, str]], lan_port: int, address: str) -> str | None:
    """The upstream through a NAT rule ``(host_port, vm_port, protocol)`` forwarding to ``lan_port``."""
    for host_port, vm_port, protocol in sorted(forwards):
        if vm_port == lan_port and protocol == "tcp":
            return dial(address, host_port)
    return None


def from_vm_addresses(addresses: Iterable[str], lan_port: int) -> str | None:
    """The upstream through the VM's own address (IPv4 before IPv6, no loopback/link-local)."""
    usable = []
    for text in addresses:
        try:
            ip = ipaddress.ip_address(text.split("/")[0])
        except ValueError:
            continue
        if not (ip.is_loopback or ip.is_link_local or ip.is_unspecified):
            usable.append(ip)
    usable.sort(key=lambda ip: ip.version)
    return dial(str(usable[0]), lan_port) if usable else None
