"""NAT port forwards, live, and the VM's addresses.

A rule ``host_port -> vm_port/proto`` is a forwarder container on the host's network namespace
(see ``forwarders.py``), listening on each address of the host option ``nat_bind`` (default
``0.0.0.0``) and forwarding to the VM's address on its Docker network. Adding or removing a rule
never stops, commits or recreates the customer's container: same container, same processes,
open connections through other forwards untouched.

Containers made by earlier releases publish their ports themselves (Docker port bindings, which
cannot change on a running container). The first NAT change of such a VM moves it to live
forwarding: the progress says so first, the container is recreated once without port bindings (one
restart, data kept) and its rules become forwarders; later changes are live.
"""

from __future__ import annotations

import logging
from typing import Any

import docker.errors

from idcs_core import errors
from idcs_core.enginekit import normalise_nat_rule
from idcs_core.types import IPAddress, NatRule, Progress
from idcs_oci import containers, forwarders, vminfo
from idcs_oci.client import Conn
from idcs_oci.containers import Blueprint, no_progress
from idcs_oci.forwarders import Forwarder

log = logging.getLogger("idcs.oci")

Key = tuple[int, str]  # (host_port, protocol): what must be unique on the host


_check = normalise_nat_rule  # the toolkit's: protocol tcp/udp lower-cased, ports 1-65535


def _key(rule: NatRule) -> Key:
    return rule.host_port, rule.protocol


def rules_of(attrs: dict[str, Any]) -> list[NatRule]:
    """The ports a container publishes itself (an earlier release's NAT), one per (host port,
    protocol), whatever the bind addresses."""
    found: dict[Key, NatRule] = {}
    bindings = (attrs.get("HostConfig") or {}).get("PortBindings") or {}
    for key, binds in bindings.items():
        port, _, proto = key.partition("/")
        for b in binds or []:
            if b.get("HostPort"):
                host_port = int(b["HostPort"])
                found.setdefault((host_port, proto or "tcp"), NatRule(host_port, int(port), proto or "tcp"))
    return sorted(found.values(), key=lambda r: (r.host_port, r.protocol))


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
    """Conflict if another VM's forwarder, or another container (running or not) publishing ports
    itself, holds one of the rules' host ports. Checked before anything changes."""
    wanted = {_key(r) for r in rules}
    if not wanted:
        return
    own_name = own.get("Name", "").lstrip("/")
    for item in conn.api.containers(all=True):
        names = [n.lstrip("/") for n in item.get("Names") or []]
        if forwarders.is_forwarder(item):
            fwd = Forwarder.from_summary(item)
            if fwd.vm_uuid != own_name and _key(fwd.rule) in wanted:
                raise errors.Conflict(f"host port {fwd.rule.host_port}/{fwd.rule.protocol} is already forwarded "
                                      f"to container {fwd.vm_uuid}")
            continue
        if item["Id"] == own["Id"] or any((containers.parse_parked(n) or ("",))[0] == own_name for n in names):
            continue  # the VM itself, or its own old container parked by a recreation
        clash = _published(conn, item) & wanted
        if clash:
            port, proto = min(clash)
            raise errors.Conflict(f"host port {port}/{proto} is already published by container "
                                  f"{(names or ['?'])[0]}")


def _target(attrs: dict[str, Any]) -> str:
    """Where the VM's forwards go: its first address (IPv4 first) while it runs or is paused; ""
    while it is stopped (its forwarders are parked then, see ``forwarders``)."""
    if (attrs.get("State") or {}).get("Status") not in ("running", "paused"):
        return ""
    ips = sorted(vminfo.ip_addresses(attrs), key=lambda a: a.version)
    if not ips:
        raise errors.VMOperationFailed(f"container {attrs.get('Name', '').lstrip('/')} has no address on a Docker "
                                       "network: NAT needs one (host option network)")
    return ips[0].address


def _go_live(conn: Conn, attrs: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """Move a container that publishes its own ports (an earlier release) to forwarders: recreate
    it once without port bindings, then forward the same rules live. Returns the current inspect."""
    legacy = rules_of(attrs)
    if not legacy:
        return attrs
    vm = attrs.get("Name", "").lstrip("/")
    _taken_elsewhere(conn, attrs, legacy)
    progress(5, f"moving the published ports of {vm} to live forwarding: the container restarts once "
                "(recreated, data kept); later NAT changes are live")

    def unpublish(bp: Blueprint) -> Blueprint:
        bp.host_config["PortBindings"] = {}
        return bp

    attrs = containers.recreate(conn, attrs, unpublish, progress=progress)
    target = _target(attrs)
    for rule in legacy:
        forwarders.open_forward(conn, vm, rule, target)
    return attrs


def _mine(conn: Conn, vm_uuid: str) -> dict[Key, Forwarder]:
    return {_key(f.rule): f for f in forwarders.of_vm(conn, vm_uuid)}


def add(conn: Conn, vm_uuid: str, rule: NatRule, progress: Progress = no_progress) -> NatRule:
    rule = _check(rule)
    attrs = _go_live(conn, containers.inspect(conn, vm_uuid), progress)
    target = _target(attrs)
    fwd = _mine(conn, vm_uuid).get(_key(rule))
    if fwd is not None and fwd.rule.vm_port != rule.vm_port:
        raise errors.Conflict(f"host port {rule.host_port}/{rule.protocol} already forwards to "
                              f"port {fwd.rule.vm_port} of {vm_uuid}")
    if fwd is None:
        _taken_elsewhere(conn, attrs, [rule])
        forwarders.open_forward(conn, vm_uuid, rule, target)
    elif not forwarders.is_current(conn, fwd, target):
        forwarders.replace(conn, fwd, target)
    return NatRule(rule.host_port, rule.vm_port, rule.protocol, _lan_addr(attrs))


def remove(conn: Conn, vm_uuid: str, rule: NatRule, progress: Progress = no_progress) -> None:
    rule = _check(rule)
    _go_live(conn, containers.inspect(conn, vm_uuid), progress)
    fwd = _mine(conn, vm_uuid).get(_key(rule))
    if fwd is not None:
        forwarders.close_forward(conn, fwd)


def sync(conn: Conn, vm_uuid: str, rules: list[NatRule], progress: Progress = no_progress) -> None:
    """Make the VM's forwarders exactly ``rules``, each forwarding to the VM's current address on the
    host's current ``nat_bind`` (what a daemon restart or host reboot may have changed)."""
    wanted: dict[Key, NatRule] = {}
    for r in map(_check, rules):
        if wanted.setdefault(_key(r), r).vm_port != r.vm_port:
            raise errors.Conflict(
                f"host port {r.host_port}/{r.protocol} is listed twice with different VM ports")
    attrs = _go_live(conn, containers.inspect(conn, vm_uuid), progress)
    target = _target(attrs)
    mine = _mine(conn, vm_uuid)
    keep = {k: f for k, f in mine.items() if k in wanted and f.rule.vm_port == wanted[k].vm_port}
    _taken_elsewhere(conn, attrs, [r for k, r in wanted.items() if k not in keep])
    for k, fwd in mine.items():
        if k not in keep:
            forwarders.close_forward(conn, fwd)
    for k, rule in wanted.items():
        if k not in keep:
            forwarders.open_forward(conn, vm_uuid, rule, target)
        elif not forwarders.is_current(conn, keep[k], target):
            forwarders.replace(conn, keep[k], target)


def follow(conn: Conn, vm_uuid: str) -> None:
    """Re-point the VM's forwarders at its current address after a start, restart or recreation,
    and park them while it is stopped. A forwarder that cannot come back (its port taken meanwhile
    by something else) is logged; the VM's own change has happened and stands."""
    mine = forwarders.of_vm(conn, vm_uuid)
    if not mine:
        return
    try:
        target = _target(containers.inspect(conn, vm_uuid))
    except errors.IDCSError as exc:
        log.warning("NAT forwards of %s on %s not re-pointed: %s", vm_uuid, conn.host.name, exc)
        return
    for fwd in mine:
        if forwarders.is_current(conn, fwd, target):
            continue
        try:
            forwarders.replace(conn, fwd, target)
        except errors.IDCSError as exc:
            log.error("NAT forward %s/%s of %s on %s could not follow the VM: %s", fwd.rule.host_port,
                      fwd.rule.protocol, vm_uuid, conn.host.name, exc)


def ip_list(conn: Conn, vm_uuid: str) -> list[IPAddress]:
    return vminfo.ip_addresses(containers.inspect(conn, vm_uuid))
