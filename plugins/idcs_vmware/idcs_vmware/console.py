"""The VM's VNC console, from its ``RemoteDisplay.vnc.*`` parameters, as a ``ConsoleEndpoint``."""

from __future__ import annotations

import asyncio
import secrets

from idcs_core import errors
from idcs_core.types import ConsoleEndpoint, ConsoleKind
from idcs_vmware.client import Vmrest, host_lock
from idcs_vmware.errors import VmrestError, business
from idcs_vmware.lifecycle import free_vnc_port, power_state, resolve

PARAMS = ("RemoteDisplay.vnc.enabled", "RemoteDisplay.vnc.port", "RemoteDisplay.vnc.password")


async def endpoint(api: Vmrest, vm_uuid: str, ref: str | None) -> ConsoleEndpoint:
    """Where the running VM's VNC server listens. A VM without VNC (e.g. imported by a scan)
    gets it enabled here; Workstation applies it at the VM's next power-on, which the error says."""
    vm_id = await resolve(api, vm_uuid, ref)
    try:
        state = await power_state(api, vm_id)
        enabled, port, password = (
            str((a or {}).get("value", "")) for a in
            await asyncio.gather(*(api.get(f"/api/vms/{vm_id}/params/{name}") for name in PARAMS)))
        if enabled.upper() != "TRUE" or not port.isdigit():
            async with host_lock(api.host):  # the same lock as create's port picking
                settings = {"RemoteDisplay.vnc.enabled": "TRUE",
                            "RemoteDisplay.vnc.port": str(await free_vnc_port(api)),
                            "RemoteDisplay.vnc.password": secrets.token_hex(4)}
                for name, value in settings.items():
                    await api.put(f"/api/vms/{vm_id}/params", {"name": name, "value": value})
            raise errors.VMOperationFailed(f"VNC was off for {vm_uuid}: it is enabled now and works after the VM's "
                                           "next power-on")
    except VmrestError as exc:
        raise business(exc, f"console of {vm_uuid}") from None
    if state != "poweredOn":
        raise errors.VMOperationFailed(f"{vm_uuid} is {state}: its console is there while it runs")
    return ConsoleEndpoint(kind=ConsoleKind.VNC, address=api.settings.vnc_address, port=int(port),
                           password=password or None)
