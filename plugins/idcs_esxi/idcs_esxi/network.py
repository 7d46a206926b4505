"""The VM's addresses as the guest reports them (VMware Tools' ``guest.net``), and the port group
new VMs connect to."""

from __future__ import annotations

import ipaddress

from pyVmomi import vim

from idcs_core import errors
from idcs_core.types import IPAddress
from idcs_esxi import naming
from idcs_esxi.client import Connection
from idcs_esxi.props import read_one


def ip_list(conn: Connection, vm_uuid: str, ref: str | None) -> list[IPAddress]:
    """One ``IPAddress`` per address of each NIC, with the NIC's MAC and device key."""
    vm = naming.resolve(conn, vm_uuid, ref)
    net = read_one(conn, vm, vim.VirtualMachine, ["guest.net"]).get("guest.net") or []
    found: list[IPAddress] = []
    for nic in net:
        for text in nic.ipAddress or []:
            try:
                version = ipaddress.ip_address(text.split("%")[0]).version
            except ValueError:
                continue
            found.append(IPAddress(address=str(text), version=version, nic=str(nic.network or ""),
                                   mac_addr=str(nic.macAddress or ""),
                                   extra={"device_key": nic.deviceConfigId}))
    return found


def port_group(conn: Connection) -> vim.Network:
    """The port group the option names, else the datacenter's first network."""
    nets = list(conn.datacenter.network)
    wanted = conn.options.network
    if wanted:
        for net in nets:
            if net.name == wanted:
                return net
        raise errors.BadRequest(f"host option network: no port group {wanted!r}")
    if not nets:
        raise errors.VMOperationFailed(f"host {conn.host.name} has no network")
    return nets[0]
