"""The vSphereESXi engine: the ``@hookimpl`` class, each hook delegating to one module.

Every hook is a plain ``def`` (pyvmomi is synchronous; the core runs it in a worker
thread). ``_call`` takes the host's session from the cache (logging in again once if it
expired) and turns vSphere faults into business errors in one place.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Concatenate, ParamSpec, TypeVar

from pyVmomi import vmodl

from idcs_core.hookspecs import hookimpl
from idcs_core.types import (
    BackupInfo,
    ConsoleEndpoint,
    DiskSpec,
    HostSpec,
    HostStatus,
    IPAddress,
    OSImage,
    PowerAction,
    Progress,
    VMInfo,
    VMSpec,
)
from idcs_esxi import backups, console, images, lifecycle, naming, network, storage
from idcs_esxi import host as hostinfo
from idcs_esxi.client import Connection, Sessions
from idcs_esxi.errors import backend_errors
from idcs_esxi.options import OPTIONS

T = TypeVar("T")
P = ParamSpec("P")


class ESXiEngine:
    """VMware ESXi hosts and vCenter servers, through pyvmomi."""

    def __init__(self) -> None:
        self.sessions = Sessions()

    def _call(self, host: HostSpec, what: str, fn: Callable[Concatenate[Connection, P], T],
              *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn(conn, *args)`` with the host's session (logged in again once if it expired, the
        VM looked up again once if it was replaced), vSphere faults turned into business errors."""
        def guarded(conn: Connection) -> T:
            try:
                return fn(conn, *args, **kwargs)
            except vmodl.fault.ManagedObjectNotFound:
                naming.index(conn, refresh=True)  # a VM replaced behind our back: look it up again
                return fn(conn, *args, **kwargs)

        with backend_errors(f"{what} on {host.name}"):
            return self.sessions.run(host, guarded)

    # ------------------------------------------------------------------ host

    @hookimpl
    def engine_describe(self) -> dict[str, Any]:
        return {
            "title": "VMware ESXi / vCenter",
            "description": "Virtual machines on VMware ESXi hosts or vCenter clusters, through the vSphere API",
            "homepage": "https://github.com/vmware/pyvmomi",
            "options": list(OPTIONS),
        }

    @hookimpl
    def host_connect(self, host: HostSpec) -> HostStatus:
        self.sessions.drop(host)  # prove the credentials with a fresh login
        return self._call(host, "connect", hostinfo.host_status)

    @hookimpl
    def host_status(self, host: HostSpec) -> HostStatus:
        return self._call(host, "status", hostinfo.host_status)

    @hookimpl
    def host_close(self, host: HostSpec) -> None:
        self.sessions.drop(host)

    @hookimpl
    def os_images(self, host: HostSpec) -> list[OSImage]:
        return self._call(host, "listing images", images.os_images)

    # ------------------------------------------------------------------ VMs

    @hookimpl
    def vm_list(self, host: HostSpec) -> list[VMInfo]:
        return self._call(host, "listing VMs", lifecycle.vm_list)

    @hookimpl
    def vm_create(self, host: HostSpec, spec: VMSpec, progress: Progress) -> VMInfo:
        return self._call(host, f"creating {spec.vm_uuid}", lifecycle.vm_create, spec, progress)

    @hookimpl
    def vm_update(self, host: HostSpec, spec: VMSpec, progress: Progress) -> VMInfo:
        return self._call(host, f"updating {spec.vm_uuid}", lifecycle.vm_update, spec, progress)

    @hookimpl
    def vm_delete(self, host: HostSpec, vm_uuid: str, ref: str, progress: Progress) -> None:
        self._call(host, f"deleting {vm_uuid}", lifecycle.vm_delete, vm_uuid, ref, progress)

    @hookimpl
    def vm_power(self, host: HostSpec, vm_uuid: str, ref: str, action: PowerAction) -> VMInfo:
        return self._call(host, f"{action} on {vm_uuid}", lifecycle.vm_power, vm_uuid, ref, action)

    @hookimpl
    def vm_status(self, host: HostSpec, vm_uuid: str, ref: str) -> VMInfo:
        return self._call(host, f"status of {vm_uuid}", lifecycle.vm_status, vm_uuid, ref)

    # ------------------------------------------------------------------ console

    @hookimpl
    def vm_console(self, host: HostSpec, vm_uuid: str, ref: str) -> ConsoleEndpoint:
        return self._call(host, f"console of {vm_uuid}", console.vm_console, vm_uuid, ref)

    # ------------------------------------------------------------------ network

    @hookimpl
    def vm_ip_list(self, host: HostSpec, vm_uuid: str, ref: str) -> list[IPAddress]:
        return self._call(host, f"addresses of {vm_uuid}", network.ip_list, vm_uuid, ref)

    # NAT: no nat_add / nat_remove. vSphere has no host-side port forwarding, so the core answers
    # 1006 by itself; reverse proxies come from the core's Caddy, to the VM's reported address.

    # ------------------------------------------------------------------ storage

    @hookimpl
    def disk_attach(self, host: HostSpec, vm_uuid: str, ref: str, disk: DiskSpec, progress: Progress) -> None:
        self._call(host, f"attaching disk {disk.name} to {vm_uuid}", storage.disk_attach, vm_uuid, ref, disk,
                   progress)

    @hookimpl
    def disk_detach(self, host: HostSpec, vm_uuid: str, ref: str, disk_name: str, progress: Progress) -> None:
        self._call(host, f"detaching disk {disk_name} from {vm_uuid}", storage.disk_detach, vm_uuid, ref, disk_name,
                   progress)

    @hookimpl
    def disk_delete(self, host: HostSpec, vm_uuid: str, ref: str, disk_name: str, progress: Progress) -> None:
        self._call(host, f"deleting disk {disk_name} of {vm_uuid}", storage.disk_delete, vm_uuid, ref, disk_name,
                   progress)

    @hookimpl
    def iso_mount(self, host: HostSpec, vm_uuid: str, ref: str, iso_name: str) -> None:
        self._call(host, f"mounting {iso_name} on {vm_uuid}", storage.iso_mount, vm_uuid, ref, iso_name)

    @hookimpl
    def iso_unmount(self, host: HostSpec, vm_uuid: str, ref: str, iso_name: str) -> None:
        self._call(host, f"ejecting {iso_name} from {vm_uuid}", storage.iso_unmount, vm_uuid, ref, iso_name)

    # ------------------------------------------------------------------ backups

    @hookimpl
    def backup_create(self, host: HostSpec, vm_uuid: str, ref: str, backup_name: str, description: str,
                      progress: Progress) -> BackupInfo:
        return self._call(host, f"backing up {vm_uuid}", backups.backup_create, vm_uuid, ref, backup_name,
                          description, progress)

    @hookimpl
    def backup_restore(self, host: HostSpec, vm_uuid: str, ref: str, backup_name: str, progress: Progress) -> VMInfo:
        return self._call(host, f"restoring {vm_uuid}", backups.backup_restore, vm_uuid, ref, backup_name, progress)

    @hookimpl
    def backup_delete(self, host: HostSpec, vm_uuid: str, ref: str, backup_name: str) -> None:
        self._call(host, f"deleting backup {backup_name} of {vm_uuid}", backups.backup_delete, vm_uuid, ref,
                   backup_name)

    @hookimpl
    def backup_list(self, host: HostSpec) -> list[BackupInfo]:
        return self._call(host, "listing backups", backups.backup_list)
