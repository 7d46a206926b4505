"""NAT port forwards (Docker published ports) and the VM's addresses.

A rule ``host_port -> vm_port/proto`` is a Docker port binding, published on
each address of the host option ``nat_bind`` (default ``0.0.0.0``: every
interface, loopback included). Docker forwards it itself (userland proxy or
its iptables rules), and it survives a daemon restart with the container.
Changing the set recreates the container keeping its data (see
``containers.py``); a set that is already right costs no recreation.
"""

from __future__ import annotations

from typing import Any

import docker.errors

from idcs_core import errors
from idcs_core.types import IPAddress, NatRule
from idcs_oci import containers, vminfo
from idcs_oci.client import Conn
from idcs_oci.containers import Blueprint

Key = tuple[int, str]  # (host_port, protocol): what must be unique on the host


def _check(rule: NatRule) -> NatRule:
    proto = (rule.protocol or "tcp").lower()
    if proto not in ("tcp", "udp"):
        raise errors.BadRequest(f"protocol must be tcp or udp, not {rule.protocol!r}")
    for name, port in (("host_port", rule.host_port), ("vm_port", rule.vm_port)):
        if not isinstance(port, int) or not 1 <= port <= 65535:
            raise errors.BadRequest(f"{name} must be a port number 1-65535, not {port!r}")
    return NatRule(rule.host_port, rule.vm_port, proto, rule.lan_addr)


def rules_of(attrs: dict[str, Any]) -> list[NatRule]:
    """The forwards a container has, one per (host port, protocol), whatever the bind addresses."""
    found: dict[Key, NatRule] = {}
    bindings = (attrs.get("HostConfig") or {}).get("PortBindings") or {}
    for key, binds in bindings.items():
        port, _, proto = key.partition("/")
        for b in binds or []:
            if b.get("HostPort"):
                host_port = int(b["HostPort"])
                found.setdefault((host_port, proto or "tcp"), NatRule(host_port, int(port), proto or "tcp"))
    return sorted(found.values(), key=lambda r: (r.host_port, r.protocol))


def _bindings(rules: list[NatRule], bind: tuple[str, ...]) -> dict[str, list[dict[str, str]]]:
    result: dict[str, list[dict[str, str]]] = {}
    for r in rules:
        result.setdefault(f"{r.vm_port}/{r.protocol}", []).extend(
            {"HostIp": addr, "HostPort": str(r.host_port)} for addr in bind)
    return result


def _flat(bindings: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {(key, b.get("HostIp") or "", str(b.get("HostPort") or ""))
            for key, binds in bindings.items() for b in binds or []}


def _lan_addr(attrs: dict[str, Any]) -> str:
    ips = vminfo.ip_addresses(attrs)
    return ips[0].address if ips else ""


def _published(conn: Conn, item: dict[str, Any]) -> set[Key]:
    """The (host port, protocol) pairs a container publishes, or will when it starts again: the list
    shows ports of running containers only, so a stopped one's bindings come from ``inspect``."""
    found: set[Key] = {(p["PublicPort"], p.get("Type", "tcp")) for p in item.get("Ports") or []
                       if p.get("PublicPort")}
    if item.get("State") not in containers.RUNNING_STATES:
        try:
            attrs = conn.api.inspect_container(item["Id"])
        except docker.errors.NotFound:  # removed meanwhile
            return found
        found |= {(r.host_port, r.protocol) for r in rules_of(attrs)}
    return found


def _taken_elsewhere(conn: Conn, own: dict[str, Any], rules: list[NatRule]) -> None:
    """Conflict if another container, running or not, publishes one of the rules' host ports (a
    stopped one would fail to start, or take the port back, later)."""
    wanted = {(r.host_port, r.protocol) for r in rules}
    own_name = own.get("Name", "").lstrip("/")
    for item in conn.api.containers(all=True):
        names = [n.lstrip("/") for n in item.get("Names") or []]
        if item["Id"] == own["Id"] or any((containers.parse_parked(n) or ("",))[0] == own_name for n in names):
            continue  # the VM itself, or its own old container parked by a recreation
        clash = _published(conn, item) & wanted
        if clash:
            port, proto = min(clash)
            raise errors.Conflict(f"host port {port}/{proto} is already published by container "
                                  f"{(names or ['?'])[0]}")


def _apply(conn: Conn, attrs: dict[str, Any], rules: list[NatRule]) -> dict[str, Any]:
    """Recreate the container so its forwards are exactly ``rules`` (no-op if they already are)."""
    bindings = _bindings(rules, conn.opts.nat_bind)
    if _flat(bindings) == _flat((attrs.get("HostConfig") or {}).get("PortBindings") or {}):
        return attrs
    _taken_elsewhere(conn, attrs, rules)

    def rebind(bp: Blueprint) -> Blueprint:
        bp.set_port_bindings(bindings)
        return bp

    return containers.recreate(conn, attrs, rebind)


def add(conn: Conn, vm_uuid: str, rule: NatRule) -> NatRule:
    rule = _check(rule)
    attrs = containers.inspect(conn, vm_uuid)
    rules = rules_of(attrs)
    for r in rules:
        if (r.host_port, r.protocol) == (rule.host_port, rule.protocol) and r.vm_port != rule.vm_port:
            raise errors.Conflict(f"host port {rule.host_port}/{rule.protocol} already forwards to "
                                  f"port {r.vm_port} of {vm_uuid}")
    attrs = _apply(conn, attrs, [*rules, rule])
    return NatRule(rule.host_port, rule.vm_port, rule.protocol, _lan_addr(attrs))


def remove(conn: Conn, vm_uuid: str, rule: NatRule) -> None:
    rule = _check(rule)
    attrs = containers.inspect(conn, vm_uuid)
    keep = [r for r in rules_of(attrs) if (r.host_port, r.protocol) != (rule.host_port, rule.protocol)]
    _apply(conn, attrs, keep)


def sync(conn: Conn, vm_uuid: str, rules: list[NatRule]) -> None:
    wanted: dict[Key, NatRule] = {}
    for r in map(_check, rules):
        if wanted.setdefault((r.host_port, r.protocol), r).vm_port != r.vm_port:
            raise errors.Conflict(
                f"host port {r.host_port}/{r.protocol} is listed twice with different VM ports")
    _apply(conn, containers.inspect(conn, vm_uuid), list(wanted.values()))


def ip_list(conn: Conn, vm_uuid: str) -> list[IPAddress]:
    return vminfo.ip_addresses(containers.inspect(conn, vm_uuid))
