"""NAT port forwards as LXD proxy devices, and the instance's IP addresses.

A forward of host port ``P`` (protocol ``tcp``/``udp``) to port ``p`` in the
container is the proxy device ``idcs-nat-<proto>-<P>``::

    listen  = <proto>:<nat_listen>:<P>     (host option nat_listen, default 0.0.0.0)
    connect = <proto>:127.0.0.1:<p>        (the container's own loopback)

LXD keeps proxy devices in the instance config, so forwards survive daemon and
host restarts and move with backups. Only containers: an LXD VM's proxy needs
NAT mode and a static address on a managed bridge (not supported here yet).
"""

from __future__ import annotations

import re
from typing import Any

from pylxd import Client
from pylxd import exceptions as lxd_exc

from idcs_core import errors
from idcs_core.enginekit import local_port_holder, normalise_nat_rule, port_bindable
from idcs_core.types import HostSpec, IPAddress, NatRule
from idcs_lxd import instances
from idcs_lxd.client import parse_addr
from idcs_lxd.errors import OperationFailed, api_message
from idcs_lxd.info import addresses
from idcs_lxd.naming import instance_name, is_internal, vm_uuid_of

NAT_PREFIX = "idcs-nat-"
_LISTEN = re.compile(r"^(tcp|udp):(.*):(\d+)$")


def device_name(rule: NatRule) -> str:
    return f"{NAT_PREFIX}{rule.protocol}-{rule.host_port}"


_check = normalise_nat_rule  # the toolkit's: protocol tcp/udp lower-cased, ports 1-65535


def device_for(host: HostSpec, rule: NatRule) -> dict[str, str]:
    listen = str(host.options.get("nat_listen") or "0.0.0.0")
    return {"type": "proxy", "listen": f"{rule.protocol}:{listen}:{rule.host_port}",
            "connect": f"{rule.protocol}:127.0.0.1:{rule.vm_port}"}


def rule_of(device: dict[str, Any]) -> NatRule | None:
    """The NatRule a proxy device implements, if it is a simple port forward."""
    listen, connect = _LISTEN.match(device.get("listen", "")), _LISTEN.match(device.get("connect", ""))
    if not listen or not connect:
        return None
    return NatRule(host_port=int(listen.group(3)), vm_port=int(connect.group(3)), protocol=listen.group(1),
                   lan_addr=connect.group(2))


def nat_list(client: Client, vm_uuid: str) -> list[NatRule]:
    """The forwards this engine made on the instance."""
    devices = instances.get(client, instance_name(vm_uuid)).get("devices") or {}
    rules = [rule_of(d) for n, d in sorted(devices.items())
             if n.startswith(NAT_PREFIX) and d.get("type") == "proxy"]
    return [r for r in rules if r is not None]


def _require_container(inst: dict[str, Any]) -> None:
    if inst.get("type") == "virtual-machine":
        raise errors.NotSupported("NAT forwards for LXD virtual machines need a static address on a managed "
                                  "bridge (proxy nat mode); only containers are supported")


def _port_owner(client: Client, rule: NatRule, skip: tuple[str, str]) -> str | None:
    """The vm_uuid of an instance (other than device ``skip``: instance name, device name)
    whose proxy listens on the rule's host port."""
    for inst in instances.list_all(client, recursion=1):
        if is_internal(inst["name"]):
            continue  # helpers never run: their copies of the VM's forwards listen nowhere
        for dev_name, device in (inst.get("expanded_devices") or inst.get("devices") or {}).items():
            if device.get("type") != "proxy" or (inst["name"], dev_name) == skip:
                continue
            match = _LISTEN.match(device.get("listen", ""))
            if match and match.group(1) == rule.protocol and int(match.group(3)) == rule.host_port:
                return vm_uuid_of(inst)
    return None


def _ensure_free(client: Client, host: HostSpec, name: str, rule: NatRule) -> None:
    owner = _port_owner(client, rule, skip=(name, device_name(rule)))
    if owner is not None:
        raise errors.Conflict(f"host port {rule.host_port}/{rule.protocol} is already forwarded to "
                              f"instance {owner}")
    listen = str(host.options.get("nat_listen") or "0.0.0.0")
    if parse_addr(host.addr).is_local and not port_bindable(rule.host_port, rule.protocol, listen):
        holder = local_port_holder(rule.host_port, rule.protocol)
        raise errors.Conflict(f"host port {rule.host_port}/{rule.protocol} is already in use on the host"
                              + (f" (by {holder})" if holder else ""))


def _apply(client: Client, name: str, change: Any, ports: str) -> None:
    """Write the device change; a proxy that cannot listen means the port is taken."""
    try:
        instances.modify(client, name, change)
    except (lxd_exc.LXDAPIException, OperationFailed) as exc:
        text = api_message(exc) if isinstance(exc, lxd_exc.LXDAPIException) else str(exc)
        if "proxy device" in text or "listen" in text.lower() or "address already in use" in text:
            raise errors.Conflict(f"host port {ports} could not be opened: {text}") from exc
        raise


def nat_add(client: Client, host: HostSpec, vm_uuid: str, rule: NatRule) -> NatRule:
    rule = _check(rule)
    name = instance_name(vm_uuid)
    inst = instances.get(client, name)
    _require_container(inst)
    dev_name, device = device_name(rule), device_for(host, rule)
    current = (inst.get("devices") or {}).get(dev_name)
    if current is not None:
        if current.get("connect") == device["connect"] and current.get("listen") == device["listen"]:
            return NatRule(rule.host_port, rule.vm_port, rule.protocol, "127.0.0.1")
        raise errors.Conflict(f"host port {rule.host_port}/{rule.protocol} is already forwarded to "
                              f"{current.get('connect')} on {vm_uuid}")
    _ensure_free(client, host, name, rule)

    def add(body: dict[str, Any]) -> None:
        body["devices"][dev_name] = device

    _apply(client, name, add, f"{rule.host_port}/{rule.protocol}")
    return NatRule(rule.host_port, rule.vm_port, rule.protocol, "127.0.0.1")


def nat_remove(client: Client, vm_uuid: str, rule: NatRule) -> None:
    rule = _check(rule)
    name = instance_name(vm_uuid)
    try:
        inst = instances.get(client, name)
    except errors.VMNotFound:
        return
    if device_name(rule) not in (inst.get("devices") or {}):
        return

    def drop(body: dict[str, Any]) -> None:
        body["devices"].pop(device_name(rule), None)

    instances.modify(client, name, drop)


def nat_sync(client: Client, host: HostSpec, vm_uuid: str, rules: list[NatRule]) -> None:
    """Make the instance's ``idcs-nat-*`` devices exactly ``rules``."""
    wanted = {device_name(r): device_for(host, r) for r in map(_check, rules)}
    name = instance_name(vm_uuid)
    inst = instances.get(client, name)
    _require_container(inst)
    devices = inst.get("devices") or {}
    for rule in map(_check, rules):
        if devices.get(device_name(rule)) != wanted[device_name(rule)]:
            _ensure_free(client, host, name, rule)

    def sync(body: dict[str, Any]) -> None:
        for dev in [d for d in body["devices"] if d.startswith(NAT_PREFIX) and d not in wanted]:
            del body["devices"][dev]
        body["devices"].update(wanted)

    _apply(client, name, sync, ", ".join(sorted(wanted)) or "-")


def ip_list(client: Client, vm_uuid: str) -> list[IPAddress]:
    """Global addresses from the instance state (none while it is stopped)."""
    state = instances.state(client, instance_name(vm_uuid))
    return [IPAddress(address=a["address"], version=6 if a["family"] == "inet6" else 4, nic=a["nic"],
                      mac_addr=a["hwaddr"], extra={"netmask": a["netmask"]})
            for a in addresses(state)]
