"""The VM's addresses as the guest reports them (VMware Tools' ``guest.net``)."""

from __future__ import annotations

import ipaddress

from pyVmomi import vim

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
