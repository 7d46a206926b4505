"""The VM's graphical console: a WebMKS ticket where the server gives one, else VNC where the
VM's ``RemoteDisplay.vnc.*`` settings enable it, else a clear 1006."""

from __future__ import annotations

import time
from typing import Any

from pyVmomi import vim, vmodl

from idcs_core import errors
from idcs_core.types import ConsoleEndpoint, ConsoleKind
from idcs_esxi import lifecycle, naming
from idcs_esxi.client import Connection
from idcs_esxi.options import as_bool
from idcs_esxi.props import read_one

TICKET_LIFETIME = 30.0  # seconds a WebMKS ticket is good for, to open the connection


def _webmks(conn: Connection, vm: Any) -> ConsoleEndpoint | None:
    try:
        ticket = vm.AcquireTicket(ticketType="webmks")
    except (vmodl.fault.MethodNotFound, vmodl.fault.NotSupported, vmodl.fault.InvalidArgument):
        return None
    return ConsoleEndpoint(kind=ConsoleKind.WEBMKS, address=str(ticket.host or conn.endpoint.hostname),
                           port=int(ticket.port or 443), ticket=str(ticket.ticket), tls=True,
                           expires_at=time.time() + TICKET_LIFETIME)


def _vnc_address(conn: Connection, runtime_host: Any) -> str:
    if conn.options.console_address:
        return conn.options.console_address
    if conn.is_vcenter and runtime_host is not None:
        return str(runtime_host.name)  # the ESXi host the VM runs on serves its VNC
    return conn.endpoint.hostname


def vm_console(conn: Connection, vm_uuid: str, ref: str | None) -> ConsoleEndpoint:
    vm = naming.resolve(conn, vm_uuid, ref)
    endpoint = _webmks(conn, vm)
    if endpoint is not None:
        return endpoint
    row = read_one(conn, vm, vim.VirtualMachine, ["config.extraConfig", "runtime.host", "runtime.powerState"])
    settings = lifecycle.extra_config(row.get("config.extraConfig"))
    if not as_bool(settings.get("RemoteDisplay.vnc.enabled"), False) or not settings.get("RemoteDisplay.vnc.port"):
        raise errors.NotSupported(f"{vm_uuid}: the host gives no WebMKS ticket and the VM has no VNC console "
                                  "(RemoteDisplay.vnc.enabled / RemoteDisplay.vnc.port)")
    if row.get("runtime.powerState") != lifecycle.On:
        raise errors.VMOperationFailed(f"{vm_uuid} is not running: its console is off")
    try:
        port = int(settings["RemoteDisplay.vnc.port"])
    except ValueError as exc:
        raise errors.VMOperationFailed(f"{vm_uuid}: RemoteDisplay.vnc.port is not a port number") from exc
    return ConsoleEndpoint(kind=ConsoleKind.VNC, address=_vnc_address(conn, row.get("runtime.host")), port=port,
                           password=settings.get("RemoteDisplay.vnc.password") or None, tls=False)
