"""The VM's addresses (DHCP reservations and leases of the libvirt network) and NAT port
forwards with nftables, in a table the engine owns (local hosts)."""

from __future__ import annotations

import ipaddress
import json
import random
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import libvirt

from idcs_core.enginekit import local_port_holder, normalise_nat_rule, port_bindable
from idcs_core.errors import BadRequest, Conflict, NotSupported, VMOperationFailed
from idcs_core.types import IPAddress, NatRule, Progress
from idcs_libvirt import domainxml, naming
from idcs_libvirt.client import active
from idcs_libvirt.host import Settings

# ---------------------------------------------------------------------- addresses


def new_mac() -> str:
    return "52:54:00:" + ":".join(f"{random.randint(0, 255):02x}" for _ in range(3))


def _network(conn: libvirt.virConnect, name: str) -> libvirt.virNetwork:
    return active(conn.networkLookupByName, name, libvirt.VIR_ERR_NO_NETWORK, "libvirt network", "network")


def reserve(conn: libvirt.virConnect, network: str, vm_uuid: str, mac: str) -> str:
    """Reserve a fixed address for ``mac`` in the network's DHCP (live and persistent); return it."""
    net = _network(conn, network)
    root = ET.fromstring(net.XMLDesc(0))
    ip_el = root.find("ip")
    dhcp = ip_el.find("dhcp") if ip_el is not None else None
    rng = dhcp.find("range") if dhcp is not None else None
    if ip_el is None or dhcp is None or rng is None:
        raise BadRequest(f"network {network!r} has no DHCP range: it cannot give VMs addresses")
    taken = {h.get("ip") for h in dhcp.findall("host")} | {str(lease.get("ipaddr")) for lease in net.DHCPLeases()}
    start, end = ipaddress.ip_address(rng.get("start", "")), ipaddress.ip_address(rng.get("end", ""))
    free = next((ipaddress.ip_address(n) for n in range(int(end), int(start) - 1, -1)
                 if str(ipaddress.ip_address(n)) not in taken), None)
    if free is None:
        raise VMOperationFailed(f"network {network!r} has no free address left in its DHCP range")
    entry = ET.Element("host", {"mac": mac, "name": vm_uuid, "ip": str(free)})
    flags = libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE | libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG
    net.update(libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST, libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST, -1,
               ET.tostring(entry, encoding="unicode"), flags)
    return str(free)


def release(conn: libvirt.virConnect, network: str, macs: list[str]) -> None:
    """Drop the DHCP reservations of ``macs`` (idempotent)."""
    try:
        net = conn.networkLookupByName(network)
    except libvirt.libvirtError:
        return
    dhcp = ET.fromstring(net.XMLDesc(0)).find("ip/dhcp")
    if dhcp is None:
        return
    flags = libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG | (libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE if net.isActive() else 0)
    for host in dhcp.findall("host"):
        if (host.get("mac") or "").lower() in macs:
            net.update(libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE, libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST, -1,
                       ET.tostring(host, encoding="unicode"), flags)


def addresses_by_mac(conn: libvirt.virConnect, networks: set[str]) -> dict[str, list[str]]:
    """MAC -> addresses, from the reservations and leases of those of ``networks`` that are
    active: one call finds them all, then two calls per network (its XML, its leases)."""
    found: dict[str, list[str]] = {}
    if not networks:
        return found
    try:
        active = [net for net in conn.listAllNetworks(libvirt.VIR_CONNECT_LIST_NETWORKS_ACTIVE)
                  if net.name() in networks]
    except libvirt.libvirtError:
        return found
    for net in active:
        try:
            dhcp = ET.fromstring(net.XMLDesc(0)).find("ip/dhcp")
            for host in dhcp.findall("host") if dhcp is not None else []:
                if host.get("mac") and host.get("ip"):
                    found.setdefault(host.get("mac", "").lower(), []).append(host.get("ip", ""))
            for lease in net.DHCPLeases():
                mac, ip = str(lease.get("mac", "")).lower(), str(lease.get("ipaddr", ""))
                if ip and ip not in found.get(mac, []):
                    found.setdefault(mac, []).append(ip)
        except libvirt.libvirtError:
            continue
    return found


def vm_addresses(conn: libvirt.virConnect, macs: list[str], networks: list[str]) -> list[IPAddress]:
    table = addresses_by_mac(conn, set(networks))
    return [IPAddress(address=ip, version=6 if ":" in ip else 4, nic=f"eth{i}", mac_addr=mac)
            for i, mac in enumerate(macs) for ip in table.get(mac, [])]


def ip_list(conn: libvirt.virConnect, dom: libvirt.virDomain) -> list[IPAddress]:
    """The domain's addresses on its networks (DHCP leases and reservations)."""
    f = domainxml.parse(dom.XMLDesc(0))
    return vm_addresses(conn, f.macs, f.networks)


# ---------------------------------------------------------------------- NAT with nftables


class Nft:
    """The engine's own nftables table (family ``ip``): DNAT from host ports to VM addresses,
    for traffic from outside (prerouting) and from the host itself (output), with a masquerade
    so that connections from the host's loopback come back. Every rule carries a comment
    ``idcs <vm_uuid> <protocol> <host_port>`` by which it is listed and removed exactly."""

    def __init__(self, settings: Settings) -> None:
        if not settings.is_local:
            raise NotSupported("NAT forwards are made with nftables on the server's own machine: "
                               "this engine supports them for local libvirt URIs only")
        self.table = settings.nat_table

    def _run(self, *args: str, stdin: str | None = None) -> str:
        proc = subprocess.run(["nft", *args], input=stdin, capture_output=True, text=True, timeout=30)
        if proc.returncode != 0:
            raise VMOperationFailed(f"nft {' '.join(args[:3])}: {proc.stderr.strip()}")
        return proc.stdout

    def ensure(self) -> None:
        """Create the table and its chains if they are missing (idempotent)."""
        t = self.table
        self._run("-f", "-", stdin=(
            f"table ip {t} {{\n"
            " chain prerouting { type nat hook prerouting priority dstnat; policy accept; }\n"
            " chain output { type nat hook output priority -100; policy accept; }\n"
            " chain postrouting { type nat hook postrouting priority srcnat; policy accept; }\n"
            "}\n"))

    def rules(self) -> list[tuple[str, int, str]]:
        """(chain, handle, comment) of every commented rule of the table."""
        try:
            data = json.loads(self._run("-j", "list", "table", "ip", self.table))
        except VMOperationFailed:
            return []
        out = []
        for item in data.get("nftables", []):
            rule = item.get("rule")
            if rule and rule.get("comment"):
                out.append((str(rule["chain"]), int(rule["handle"]), str(rule["comment"])))
        return out

    def forwards(self, vm_uuid: str | None = None) -> dict[tuple[str, int], str]:
        """(protocol, host_port) -> vm_uuid of the forwards in the table (of one VM if given)."""
        found = {}
        for _chain, _handle, comment in self.rules():
            parts = comment.split()
            if len(parts) == 4 and parts[0] == "idcs" and (vm_uuid is None or parts[1] == vm_uuid):
                found[(parts[2], int(parts[3]))] = parts[1]
        return found

    def add(self, vm_uuid: str, rule: NatRule, vm_addr: str, bridge: str | None) -> None:
        protocol = rule.protocol.lower()
        if protocol not in ("tcp", "udp"):
            raise BadRequest(f"protocol {rule.protocol!r}: tcp or udp")
        comment = naming.rule_comment(vm_uuid, protocol, rule.host_port)
        target = f"{ipaddress.ip_address(vm_addr)}:{int(rule.vm_port)}"
        port = str(int(rule.host_port))
        self.ensure()
        if bridge:  # connections from the host's loopback are routed to the bridge
            path = Path(f"/proc/sys/net/ipv4/conf/{bridge}/route_localnet")
            if path.exists():
                path.write_text("1")
        t = self.table
        script = (
            f'add rule ip {t} prerouting fib daddr type local {protocol} dport {port} dnat to {target} '
            f'comment "{comment}"\n'
            f'add rule ip {t} output fib daddr type local {protocol} dport {port} dnat to {target} '
            f'comment "{comment}"\n'
            f'add rule ip {t} postrouting ip saddr 127.0.0.0/8 ip daddr {ipaddress.ip_address(vm_addr)} '
            f'{protocol} dport {int(rule.vm_port)} masquerade comment "{comment}"\n')
        self._run("-f", "-", stdin=script)

    def remove(self, vm_uuid: str, protocol: str, host_port: int) -> None:
        comment = naming.rule_comment(vm_uuid, protocol.lower(), host_port)
        for chain, handle, found in self.rules():
            if found == comment:
                self._run("delete", "rule", "ip", self.table, chain, "handle", str(handle))

    def remove_vm(self, vm_uuid: str) -> None:
        for protocol, port in list(self.forwards(vm_uuid)):
            self.remove(vm_uuid, protocol, port)


def bridge_of(conn: libvirt.virConnect, network: str) -> str | None:
    try:
        return str(conn.networkLookupByName(network).bridgeName())
    except libvirt.libvirtError:
        return None


def check_free(nft: Nft, vm_uuid: str, rule: NatRule) -> None:
    """Conflict when another VM's forward or a program on the host holds the port."""
    owner = nft.forwards().get((rule.protocol, rule.host_port))
    if owner is not None and owner != vm_uuid:
        raise Conflict(f"host port {rule.host_port}/{rule.protocol} already forwards to VM {owner}")
    if owner is None and not port_bindable(rule.host_port, rule.protocol):
        holder = local_port_holder(rule.host_port, rule.protocol) or "a program"
        raise Conflict(f"host port {rule.host_port}/{rule.protocol} is in use on the host by {holder}")


Target = Callable[[], tuple[str, str | None]]
"""Finds the VM's forward target when called: its IPv4 address and its network's bridge (or None)."""


def forward_target(conn: libvirt.virConnect, dom: libvirt.virDomain, vm_uuid: str) -> tuple[str, str | None]:
    """The VM's first IPv4 address on its networks and the bridge of its first network."""
    f = domainxml.parse(dom.XMLDesc(0))
    addrs = [a for a in vm_addresses(conn, f.macs, f.networks) if a.version == 4]
    if not addrs:
        raise VMOperationFailed(f"{vm_uuid} has no IPv4 address on its network yet: cannot forward to it")
    return addrs[0].address, bridge_of(conn, f.networks[0]) if f.networks else None


def nat_add(settings: Settings, vm_uuid: str, rule: NatRule, target: Target, progress: Progress) -> NatRule:
    """Forward ``rule.host_port`` of this machine to the VM (nftables DNAT), replacing its old forward."""
    rule = normalise_nat_rule(rule)
    nft = Nft(settings)
    addr, bridge = target()
    check_free(nft, vm_uuid, rule)
    progress(50, f"forwarding host port {rule.host_port} to {addr}:{rule.vm_port}")
    nft.remove(vm_uuid, rule.protocol, rule.host_port)
    nft.add(vm_uuid, rule, addr, bridge)
    return NatRule(host_port=rule.host_port, vm_port=rule.vm_port, protocol=rule.protocol, lan_addr=addr)


def nat_remove(settings: Settings, vm_uuid: str, rule: NatRule, progress: Progress) -> None:
    progress(50, f"removing the forward of host port {rule.host_port}")
    Nft(settings).remove(vm_uuid, rule.protocol, rule.host_port)


def nat_sync(settings: Settings, vm_uuid: str, rules: list[NatRule], target: Target) -> None:
    """Make the VM's forwards exactly ``rules``: others removed, these re-made (the VM's address
    may have changed); the VM is only looked up when it has forwards."""
    nft = Nft(settings)
    wanted = {(r.protocol, r.host_port): r for r in map(normalise_nat_rule, rules)}
    for key in set(nft.forwards(vm_uuid)) - set(wanted):
        nft.remove(vm_uuid, *key)
    if not wanted:
        return
    addr, bridge = target()
    for rule in wanted.values():
        nft.remove(vm_uuid, rule.protocol, rule.host_port)
        nft.add(vm_uuid, rule, addr, bridge)
