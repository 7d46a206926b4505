"""The VmwareWork engine: the ``@hookimpl`` class, delegating to one-job modules.

Every hook is ``async`` (httpx.AsyncClient, awaited on the server's event loop). Hooks this
engine leaves out answer 1006 by themselves: vmrest has no disk, CD-ROM, snapshot, guest
password or terminal calls (see the README's capability table).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
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
from idcs_vmware import host as hostinfo
from idcs_vmware.client import Vmrest
from idcs_vmware.errors import translated
from idcs_vmware.host import OPTIONS


class VmwareEngine:
    """Registered under the engine type ``VmwareWork`` (see pyproject.toml)."""

    @contextlib.asynccontextmanager
    async def _on(self, host: HostSpec, what: str) -> AsyncIterator[Vmrest]:
        with translated(what):
            yield client.connect(host)

    # ------------------------------------------------------------------ host

    @hookimpl
    def engine_describe(self) -> dict[str, Any]:
        return {"title": "VMware Workstation Pro (vmrest)",
                "description": "Workstation Pro VMs through its REST API (vmrest): clone from template VMs, "
                               "CPU/RAM, power, NAT port forwarding on a vmnet, VNC consoles.",
                "homepage": "https://www.vmware.com/products/desktop-hypervisor/workstation-and-fusion",
                "options": list(OPTIONS)}

    @hookimpl
    async def host_connect(self, host: HostSpec) -> HostStatus:
        async with self._on(host, f"host {host.name}") as api:
            return await hostinfo.host_status(api)

    @hookimpl
    async def host_status(self, host: HostSpec) -> HostStatus:
        async with self._on(host, f"host {host.name}") as api:
            return await hostinfo.host_status(api)

    @hookimpl
    async def host_close(self, host: HostSpec) -> None:
        await client.close(host)

    @hookimpl
    async def os_images(self, host: HostSpec) -> list[OSImage]:
        async with self._on(host, f"images of {host.name}") as api:
            return await images.os_images(api)

    # ------------------------------------------------------------------ VMs

    @hookimpl
    async def vm_list(self, host: HostSpec) -> list[VMInfo]:
        async with self._on(host, f"VMs of {host.name}") as api:
            return await lifecycle.list_vms(api)

    @hookimpl
    async def vm_create(self, host: HostSpec, spec: VMSpec, progress: Progress) -> VMInfo:
        async with self._on(host, f"create {spec.vm_uuid}") as api:
            return await lifecycle.create(api, spec, progress)

    @hookimpl
    async def vm_reinstall(self, host: HostSpec, spec: VMSpec, progress: Progress) -> VMInfo:
        async with self._on(host, f"reinstall {spec.vm_uuid}") as api:
            return await lifecycle.reinstall(api, spec, progress)

    @hookimpl
    async def vm_update(self, host: HostSpec, spec: VMSpec) -> VMInfo:
        async with self._on(host, f"update {spec.vm_uuid}") as api:
            return await lifecycle.update(api, spec)

    @hookimpl
    async def vm_delete(self, host: HostSpec, vm_uuid: str, ref: str) -> None:
        async with self._on(host, f"delete {vm_uuid}") as api:
            await lifecycle.delete(api, vm_uuid, ref)

    @hookimpl
    async def vm_power(self, host: HostSpec, vm_uuid: str, ref: str, action: PowerAction) -> VMInfo:
        async with self._on(host, f"{action.value} {vm_uuid}") as api:
            return await lifecycle.power(api, vm_uuid, ref, action)

    @hookimpl
    async def vm_status(self, host: HostSpec, vm_uuid: str, ref: str) -> VMInfo:
        async with self._on(host, f"status of {vm_uuid}") as api:
            return await lifecycle.status(api, vm_uuid, ref)

    # ------------------------------------------------------------------ console

    @hookimpl
    async def vm_console(self, host: HostSpec, vm_uuid: str, ref: str) -> ConsoleEndpoint:
        async with self._on(host, f"console of {vm_uuid}") as api:
            return await console.endpoint(api, vm_uuid, ref)

    # ------------------------------------------------------------------ network

    @hookimpl
    async def vm_ip_list(self, host: HostSpec, vm_uuid: str, ref: str) -> list[IPAddress]:
        async with self._on(host, f"addresses of {vm_uuid}") as api:
            return await network.ip_list(api, vm_uuid, ref)

    @hookimpl
    async def nat_add(self, host: HostSpec, vm_uuid: str, ref: str, rule: NatRule) -> NatRule:
        async with self._on(host, f"forward port {rule.host_port} to {vm_uuid}") as api:
            return await network.nat_add(api, vm_uuid, ref, rule)

    @hookimpl
    async def nat_remove(self, host: HostSpec, vm_uuid: str, rule: NatRule) -> None:
        async with self._on(host, f"remove port {rule.host_port} of {vm_uuid}") as api:
            await network.nat_remove(api, vm_uuid, rule)

    @hookimpl
    async def nat_sync(self, host: HostSpec, vm_uuid: str, ref: str, rules: list[NatRule]) -> None:
        async with self._on(host, f"sync the forwards of {vm_uuid}") as api:
            await network.nat_sync(api, vm_uuid, ref, rules)
