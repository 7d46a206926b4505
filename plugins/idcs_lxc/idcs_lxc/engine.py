"""The LXC engine (type ``Containers``): one hook implementation per capability, each a line or two.

Each hook takes the host's cached ``Session`` (one SSH connection per host, or this machine),
runs one function of a module that does one job (``lifecycle``, ``network``, ``storage``,
``backups``, ``guest``, ``terminal``, ``images``, ``host``), and lets ``errors.translate`` turn
SSH and OS faults into OpenIDCS errors. A host found unreachable loses its cached session, so
the next call connects afresh.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from idcs_core.hookspecs import hookimpl
from idcs_core.types import (
    BackupInfo,
    DiskSpec,
    HostSpec,
    HostStatus,
    IPAddress,
    NatRule,
    OSImage,
    PowerAction,
    Progress,
    TerminalChannel,
    VMInfo,
    VMSpec,
)
from idcs_lxc import backups, guest, images, lifecycle, network, storage, terminal
from idcs_lxc import host as hostinfo  # the module; ``host`` is each hook's HostSpec
from idcs_lxc.client import Session, SessionCache
from idcs_lxc.errors import translate
from idcs_lxc.naming import container_name

T = TypeVar("T")


class LXCEngine:
    """Plain LXC hosts (no LXD daemon), on this machine or over SSH: VMs are containers."""

    def __init__(self) -> None:
        self.sessions = SessionCache()

    def _on_host(self, host: HostSpec, action: str, fn: Callable[..., T], *args: Any) -> T:
        """``fn(session, *args)`` with the host's session, faults translated (1003 drops the session)."""
        with translate(action, on_unreachable=lambda: self.sessions.drop(host)):
            session: Session = self.sessions.get(host)
            return fn(session, *args)

    def _on_vm(self, host: HostSpec, vm_uuid: str, ref: str, action: str, fn: Callable[..., T], *args: Any) -> T:
        """``fn(session, container, *args)`` for one VM, its container named by ``naming``."""
        return self._on_host(host, action, fn, container_name(vm_uuid, ref), *args)

    # ------------------------------------------------------------------ host

    @hookimpl
    def engine_describe(self) -> dict[str, Any]:
        return hostinfo.describe()

    @hookimpl
    def host_connect(self, host: HostSpec) -> HostStatus:
        self.sessions.drop(host)  # new address or credentials: prove them afresh
        return self._on_host(host, "connect", hostinfo.host_status)

    @hookimpl
    def host_status(self, host: HostSpec) -> HostStatus:
        return self._on_host(host, "host status", hostinfo.host_status)

    @hookimpl
    def host_close(self, host: HostSpec) -> None:
        self.sessions.drop(host)  # never raises: closing a dead connection is swallowed

    @hookimpl
    def os_images(self, host: HostSpec) -> list[OSImage]:
        return self._on_host(host, "list images", images.list_images)

    # ------------------------------------------------------------------ VMs

    @hookimpl
    def vm_list(self, host: HostSpec) -> list[VMInfo]:
        return self._on_host(host, "list containers", lifecycle.vm_list)

    @hookimpl
    def vm_create(self, host: HostSpec, spec: VMSpec, progress: Progress) -> VMInfo:
        return self._on_host(host, f"create {spec.vm_uuid}", lifecycle.vm_create, spec, progress)

    @hookimpl
    def vm_update(self, host: HostSpec, spec: VMSpec, progress: Progress) -> VMInfo:
        return self._on_host(host, f"update {spec.vm_uuid}", lifecycle.vm_update, spec, progress)

    @hookimpl
    def vm_delete(self, host: HostSpec, vm_uuid: str, ref: str, progress: Progress) -> None:
        self._on_vm(host, vm_uuid, ref, f"delete {vm_uuid}", lifecycle.vm_delete, progress)

    @hookimpl
    def vm_reinstall(self, host: HostSpec, spec: VMSpec, progress: Progress) -> VMInfo:
        return self._on_host(host, f"reinstall {spec.vm_uuid}", lifecycle.vm_reinstall, spec, progress)

    @hookimpl
    def vm_power(self, host: HostSpec, vm_uuid: str, ref: str, action: PowerAction) -> VMInfo:
        return self._on_vm(host, vm_uuid, ref, f"power {action} {vm_uuid}", lifecycle.vm_power, action)

    @hookimpl
    def vm_status(self, host: HostSpec, vm_uuid: str, ref: str) -> VMInfo:
        return self._on_vm(host, vm_uuid, ref, f"status of {vm_uuid}", lifecycle.read_status)

    @hookimpl
    def vm_set_password(self, host: HostSpec, vm_uuid: str, ref: str, username: str, password: str) -> None:
        self._on_vm(host, vm_uuid, ref, f"set a password in {vm_uuid}", guest.set_password, username, password)

    @hookimpl
    def vm_terminal_open(self, host: HostSpec, vm_uuid: str, ref: str, cols: int, rows: int) -> TerminalChannel:
        return self._on_vm(host, vm_uuid, ref, f"terminal to {vm_uuid}", terminal.open_terminal, cols, rows)

    # ------------------------------------------------------------------ network

    @hookimpl
    def vm_ip_list(self, host: HostSpec, vm_uuid: str, ref: str) -> list[IPAddress]:
        return self._on_vm(host, vm_uuid, ref, f"addresses of {vm_uuid}", network.ip_list)

    @hookimpl
    def nat_add(self, host: HostSpec, vm_uuid: str, ref: str, rule: NatRule, progress: Progress) -> NatRule:
        progress(10, f"adding an nftables DNAT rule for port {rule.host_port}")
        return self._on_vm(host, vm_uuid, ref, f"forward port {rule.host_port} to {vm_uuid}", network.nat_add, rule)

    @hookimpl
    def nat_remove(self, host: HostSpec, vm_uuid: str, ref: str, rule: NatRule, progress: Progress) -> None:
        progress(10, f"removing the nftables DNAT rule of port {rule.host_port}")
        self._on_vm(host, vm_uuid, ref, f"remove the forward of port {rule.host_port}", network.nat_remove, rule)

    @hookimpl
    def nat_sync(self, host: HostSpec, vm_uuid: str, ref: str, rules: list[NatRule]) -> None:
        self._on_vm(host, vm_uuid, ref, f"restore the forwards of {vm_uuid}", network.nat_sync, rules)

    # ------------------------------------------------------------------ storage

    @hookimpl
    def disk_attach(self, host: HostSpec, vm_uuid: str, ref: str, disk: DiskSpec, progress: Progress) -> None:
        self._on_vm(host, vm_uuid, ref, f"attach disk {disk.name} to {vm_uuid}", storage.disk_attach, disk,
                    progress)

    @hookimpl
    def disk_detach(self, host: HostSpec, vm_uuid: str, ref: str, disk_name: str, progress: Progress) -> None:
        self._on_vm(host, vm_uuid, ref, f"detach disk {disk_name} from {vm_uuid}", storage.disk_detach, disk_name,
                    progress)

    @hookimpl
    def disk_delete(self, host: HostSpec, vm_uuid: str, ref: str, disk_name: str, progress: Progress) -> None:
        self._on_vm(host, vm_uuid, ref, f"delete disk {disk_name} of {vm_uuid}", storage.disk_delete, disk_name,
                    progress)

    # ------------------------------------------------------------------ backups

    @hookimpl
    def backup_create(self, host: HostSpec, vm_uuid: str, ref: str, backup_name: str, description: str,
                      progress: Progress) -> BackupInfo:
        return self._on_vm(host, vm_uuid, ref, f"back up {vm_uuid}", backups.backup_create, backup_name,
                           description, progress)

    @hookimpl
    def backup_restore(self, host: HostSpec, vm_uuid: str, ref: str, backup_name: str, progress: Progress) -> VMInfo:
        return self._on_vm(host, vm_uuid, ref, f"restore {vm_uuid}", backups.backup_restore, backup_name, progress)

    @hookimpl
    def backup_delete(self, host: HostSpec, vm_uuid: str, ref: str, backup_name: str) -> None:
        self._on_vm(host, vm_uuid, ref, f"delete backup {backup_name}", backups.backup_delete, backup_name)

    @hookimpl
    def backup_list(self, host: HostSpec) -> list[BackupInfo]:
        return self._on_host(host, "list backups", backups.backup_list)
