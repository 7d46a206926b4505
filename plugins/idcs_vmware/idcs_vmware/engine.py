"""The VmwareWork engine: the ``@hookimpl`` class, delegating to one-job modules.

Every hook is ``async`` (httpx.AsyncClient, awaited on the server's event loop). Hooks this
engine leaves out answer 1006 by themselves: vmrest has no disk, CD-ROM, snapshot, guest
password or terminal calls (see the README's capability table).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Concatenate, ParamSpec, TypeVar

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

T = TypeVar("T")
P = ParamSpec("P")


class VmwareEngine:
    """Registered under the engine type ``VmwareWork`` (see pyproject.toml)."""

    async def _call(self, host: HostSpec, what: str, fn: Callable[Concatenate[Vmrest, P], Awaitable[T]],
                    *args: P.args, **kwargs: P.kwargs) -> T:
        """``await fn(api, *args)`` with the host's cached pool, vmrest's error answers turned
        into business errors naming ``what``."""
        with translated(what):
            return await fn(client.connect(host), *args, **kwargs)

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
        return await self._call(host, f"host {host.name}", hostinfo.host_status)

    @hookimpl
    async def host_status(self, host: HostSpec) -> HostStatus:
        return await self._call(host, f"host {host.name}", hostinfo.host_status)

    @hookimpl
    async def host_close(self, host: HostSpec) -> None:
        await client.close(host)

    @hookimpl
    async def os_images(self, host: HostSpec) -> list[OSImage]:
        return await self._call(host, f"images of {host.name}", images.os_images)

    # ------------------------------------------------------------------ VMs

    @hookimpl
    async def vm_list(self, host: HostSpec) -> list[VMInfo]:
        return await self._call(host, f"VMs of {host.name}", lifecycle.list_vms)

    @hookimpl
    async def vm_create(self, host: HostSpec, spec: VMSpec, progress: Progress) -> VMInfo:
        return await self._call(host, f"create {spec.vm_uuid}", lifecycle.create, spec, progress)

    @hookimpl
    async def vm_reinstall(self, host: HostSpec, spec: VMSpec, progress: Progress) -> VMInfo:
        return await self._call(host, f"reinstall {spec.vm_uuid}", lifecycle.reinstall, spec, progress)

    @hookimpl
    async def vm_update(self, host: HostSpec, spec: VMSpec) -> VMInfo:
        return await self._call(host, f"update {spec.vm_uuid}", lifecycle.update, spec)

    @hookimpl
    async def vm_delete(self, host: HostSpec, vm_uuid: str, ref: str) -> None:
        await self._call(host, f"delete {vm_uuid}", lifecycle.delete, vm_uuid, ref)

    @hookimpl
    async def vm_power(self, host: HostSpec, vm_uuid: str, ref: str, action: PowerAction) -> VMInfo:
        return await self._call(host, f"{action.value} {vm_uuid}", lifecycle.power, vm_uuid, ref, action)

    @hookimpl
    async def vm_status(self, host: HostSpec, vm_uuid: str, ref: str) -> VMInfo:
        return await self._call(host, f"status of {vm_uuid}", lifecycle.status, vm_uuid, ref)

    # ------------------------------------------------------------------ console

    @hookimpl
    async def vm_console(self, host: HostSpec, vm_uuid: str, ref: str) -> ConsoleEndpoint:
        return await self._call(host, f"console of {vm_uuid}", console.endpoint, vm_uuid, ref)

    # ------------------------------------------------------------------ network

    @hookimpl
    async def vm_ip_list(self, host: HostSpec, vm_uuid: str, ref: str) -> list[IPAddress]:
        return await self._call(host, f"addresses of {vm_uuid}", network.ip_list, vm_uuid, ref)

    @hookimpl
    async def nat_add(self, host: HostSpec, vm_uuid: str, ref: str, rule: NatRule) -> NatRule:
        return await self._call(host, f"forward port {rule.host_port} to {vm_uuid}", network.nat_add, vm_uuid, ref,
                                rule)

    @hookimpl
    async def nat_remove(self, host: HostSpec, vm_uuid: str, rule: NatRule) -> None:
        await self._call(host, f"remove port {rule.host_port} of {vm_uuid}", network.nat_remove, vm_uuid, rule)

    @hookimpl
    async def nat_sync(self, host: HostSpec, vm_uuid: str, ref: str, rules: list[NatRule]) -> None:
        await self._call(host, f"sync the forwards of {vm_uuid}", network.nat_sync, vm_uuid, ref, rules)
