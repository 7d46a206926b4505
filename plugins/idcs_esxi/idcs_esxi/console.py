"""The VM's graphical console: VNC where the VM's ``RemoteDisplay.vnc.*`` settings enable it,
else a WebMKS ticket where the server gives one, else a clear 1006.

VNC goes first because enabling it is the operator's explicit choice (``vnc_ports``) and the
core bridges VNC today, while it answers 1006 for WebMKS endpoints."""

from __future__ import annotations

import logging
import secrets
import time
from typing import Any

from pyVmomi import vim, vmodl

from idcs_core import errors
from idcs_core.enginekit import option_bool
from idcs_core.types import ConsoleEndpoint, ConsoleKind
from idcs_esxi import naming
from idcs_esxi.client import Connection
from idcs_esxi.props import option_dict, read_one, read_view

TICKET_LIFETIME = 30.0
VNC_ENABLED = "RemoteDisplay.vnc.enabled"
VNC_PORT = "RemoteDisplay.vnc.port"
VNC_PASSWORD = "RemoteDisplay.vnc.password"
log = logging.getLogger("idcs.esxi")  # seconds a WebMKS ticket is good for, to open the connection


def _webmks(conn: Connection, vm: vim.VirtualMachine) -> ConsoleEndpoint | None:
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


def _vnc_enabled(settings: dict[str, str]) -> bool:
    """The VM's ``RemoteDisplay.vnc.enabled`` (a VMX value: anything but yes/no is no)."""
    try:
        return option_bool(VNC_ENABLED, settings.get(VNC_ENABLED))
    except errors.BadRequest:
        return False


def vm_console(conn: Connection, vm_uuid: str, ref: str | None) -> ConsoleEndpoint:
    """VNC where the VM's ``RemoteDisplay.vnc.*`` settings enable it (an explicit choice of the
    operator, and what the core bridges today), else a WebMKS ticket, else 1006."""
    vm = naming.resolve(conn, vm_uuid, ref)
    row = read_one(conn, vm, vim.VirtualMachine, ["config.extraConfig", "runtime.host", "runtime.powerState"])
    settings = option_dict(row.get("config.extraConfig"))
    if _vnc_enabled(settings) and settings.get(VNC_PORT):
        if row.get("runtime.powerState") != "poweredOn":
            raise errors.VMOperationFailed(f"{vm_uuid} is not running: its console is off")
        try:
            port = int(settings[VNC_PORT])
        except ValueError as exc:
            raise errors.VMOperationFailed(f"{vm_uuid}: {VNC_PORT} is not a port number") from exc
        return ConsoleEndpoint(kind=ConsoleKind.VNC, address=_vnc_address(conn, row.get("runtime.host")), port=port,
                               password=settings.get(VNC_PASSWORD) or None, tls=False)
    endpoint = _webmks(conn, vm)
    if endpoint is not None:
        return endpoint
    raise errors.NotSupported(f"{vm_uuid}: the VM has no VNC console ({VNC_ENABLED} / {VNC_PORT}) and the host "
                              "gives no WebMKS ticket")


def vnc_settings(conn: Connection, vm_uuid: str) -> list[vim.option.OptionValue]:
    """extraConfig giving a new VM a VNC console on a free port of the ``vnc_ports`` option
    (none when the option is empty or every port is taken), with a random password."""
    span = conn.options.vnc_ports
    if span is None:
        return []
    used: set[int] = set()
    for row in read_view(conn, conn.vm_view, vim.VirtualMachine, ["config.extraConfig"]):
        value = option_dict(row.get("config.extraConfig")).get(VNC_PORT, "")
        if value.isdigit():
            used.add(int(value))
    port = next((p for p in range(span[0], span[1] + 1) if p not in used), None)
    if port is None:
        log.warning("%s on %s gets no VNC console: every port of %s-%s is taken", vm_uuid, conn.host.name, *span)
        return []
    password = secrets.token_urlsafe(6)[:8]  # VNC uses the first 8 characters
    values = {VNC_ENABLED: "true", VNC_PORT: str(port), VNC_PASSWORD: password}
    return [vim.option.OptionValue(key=k, value=v) for k, v in values.items()]
