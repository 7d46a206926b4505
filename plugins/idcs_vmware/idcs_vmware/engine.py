"""The VmwareWork engine: the ``@hookimpl`` class, delegating to one-job modules.

Every hook is ``async`` (httpx.AsyncClient, awaited on the server's event loop). Hooks this
engine leaves out answer 1006 by themselves: vmrest has no disk, CD-ROM, snapshot, guest
password or terminal calls (see the README's capability table).
"""

from __future__ import annotations

from typing import Any

from idcs_core.hookspecs import hookimpl
from idcs_core.types import (
    ConsoleEndpoint,
    HostSpec,
    HostStatus,
    IPAddress,
    NatRule,
    OSImage,
    PowerAction,
    Progress,
    VMInfo,
    VMSpec,
)
from idcs_vmware import client, console, images, lifecycle, network
from idcs_vmware.errors import translated
from idcs_vmware.host import OPTIONS, status_from_list


async def _host_status(spec: HostSpec) -> HostStatus:
    api = client.connect(spec)
    with translated(f"host {spec.name}"):
        listing = await api.list_vms()
    return status_from_list(listing, api.settings.template_prefix)


class VmwareEngine:
    """Registered under the engine type ``VmwareWork`` (see pyproject.toml)."""

    @hookimpl
    def engine_describe(self) -> dict[str, Any]:
        return {"title": "VMware Workstation Pro (vmrest)",
                "description": "Workstation Pro VMs through its REST API (vmrest): clone from template VMs, "
                               "CPU/RAM, power, NAT port forwarding on a vmnet, VNC consoles.",
                "homepage": "https://www.vmware.com/products/desktop-hypervisor/workstation-and-fusion",
                "options": list(OPTIONS)}

    @hookimpl
    async def host_connect(self, host: HostSpec) -> HostStatus:
        return await _host_status(host)

    @hookimpl
    async def host_status(self, host: HostSpec) -> HostStatus:
        return await _host_status(host)

    @hookimpl
    async def host_close(self, host: HostSpec) -> None:
        await client.close(host)

    @hookimpl
    async def os_images(self, host: HostSpec) -> list[OSImage]:
        with translated(f"images of {host.name}"):
            return await images.os_images(client.connect(host))

    @hookimpl
    async def vm_list(self, host: HostSpec) -> list[VMInfo]:
        with translated(f"VMs of {host.name}"):
            return await lifecycle.list_vms(client.connect(host))

    @hookimpl
    async def vm_create(self, host: HostSpec, spec: VMSpec, progress: Progress) -> VMInfo:
        with translated(f"create {spec.vm_uuid}"):
            return await lifecycle.create(client.connect(host), spec, progress)

    @hookimpl
    async def vm_reinstall(self, host: HostSpec, spec: VMSpec, progress: Progress) -> VMInfo:
        with translated(f"reinstall {spec.vm_uuid}"):
            return await lifecycle.reinstall(client.connect(host), spec, progress)

    @hookimpl
    async def vm_update(self, host: HostSpec, spec: VMSpec) -> VMInfo:
        with translated(f"update {spec.vm_uuid}"):
            return await lifecycle.update(client.connect(host), spec)

    @hookimpl
    async def vm_delete(self, host: HostSpec, vm_uuid: str, ref: str) -> None:
        with translated(f"delete {vm_uuid}"):
            await lifecycle.delete(client.connect(host), vm_uuid, ref)

    @hookimpl
    async def vm_power(self, host: HostSpec, vm_uuid: str, ref: str, action: PowerAction) -> VMInfo:
        with translated(f"{action.value} {vm_uuid}"):
            return await lifecycle.power(client.connect(host), vm_uuid, ref, action)

    @hookimpl
    async def vm_status(self, host: HostSpec, vm_uuid: str, ref: str) -> VMInfo:
        with translated(f"status of {vm_uuid}"):
            return await lifecycle.status(client.connect(host), vm_uuid, ref)

    @hookimpl
    async def vm_console(self, host: HostSpec, vm_uuid: str, ref: str) -> ConsoleEndpoint:
        with translated(f"console of {vm_uuid}"):
            return await console.endpoint(client.connect(host), vm_uuid, ref)

    @hookimpl
    async def vm_ip_list(self, host: HostSpec, vm_uuid: str, ref: str) -> list[IPAddress]:
        with translated(f"addresses of {vm_uuid}"):
            return await network.ip_list(client.connect(host), vm_uuid, ref)

    @hookimpl
    async def nat_add(self, host: HostSpec, vm_uuid: str, ref: str, rule: NatRule) -> NatRule:
        with translated(f"forward port {rule.host_port} to {vm_uuid}"):
            return await network.nat_add(client.connect(host), vm_uuid, ref, rule)

    @hookimpl
    async def nat_remove(self, host: HostSpec, vm_uuid: str, rule: NatRule) -> None:
        with translated(f"remove port {rule.host_port} of {vm_uuid}"):
            await network.nat_remove(client.connect(host), vm_uuid, rule)

    @hookimpl
    async def nat_sync(self, host: HostSpec, vm_uuid: str, ref: str, rules: list[NatRule]) -> None:
        with translated(f"sync the forwards of {vm_uuid}"):
            await network.nat_sync(client.connect(host), vm_uuid, ref, rules)
