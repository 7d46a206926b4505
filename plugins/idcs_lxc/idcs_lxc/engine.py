"""The LXC engine (type ``Containers``): hook implementations only, each delegating to one module.

Every hook runs inside ``self._on(host, what)``, which hands it the host's cached ``Session``
(one SSH connection per host, or this machine) and turns faults into business errors.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

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
from idcs_lxc import host as hostinfo
from idcs_lxc.client import Session, SessionCache
from idcs_lxc.errors import translated
from idcs_lxc.naming import container_name


class LXCEngine:
    """OpenIDCS engine for plain LXC hosts (no LXD daemon), on this machine or over SSH."""

    def __init__(self) -> None:
        self.sessions = SessionCache()

    @contextlib.contextmanager
    def _on(self, host: HostSpec, what: str) -> Iterator[Session]:
        with translated(what):
            yield self.sessions.get(host)

    # ------------------------------------------------------------------ host

    @hookimpl
    def engine_describe(self) -> dict[str, Any]:
        return {"title": "LXC containers",
                "description": "Plain LXC 5 containers (no LXD daemon) on this machine (server_addr 'local') or on "
                               "a Linux host over SSH (server_addr 'ssh://user@host[:port]', password or key, host "
                               "key pinned); NAT through an nftables table of the engine's own.",
                "homepage": "https://linuxcontainers.org/lxc/",
                "options": list(hostinfo.OPTIONS)}

    @hookimpl
    def host_connect(self, host: HostSpec) -> HostStatus:
        self.sessions.drop(host)  # new address or credentials: prove them afresh
        with self._on(host, "connect") as session:
            return hostinfo.host_status(session)

    @hookimpl
    def host_status(self, host: HostSpec) -> HostStatus:
        with self._on(host, "host status") as session:
            return hostinfo.host_status(session)

    @hookimpl
    def host_close(self, host: HostSpec) -> None:
        with contextlib.suppress(Exception):
            self.sessions.drop(host)

    @hookimpl
    def os_images(self, host: HostSpec) -> list[OSImage]:
        with self._on(host, "list images") as session:
            return images.list_images(session)

    # ------------------------------------------------------------------ containers

    @hookimpl
    def vm_list(self, host: HostSpec) -> list[VMInfo]:
        with self._on(host, "list containers") as session:
            return lifecycle.vm_list(session)

    @hookimpl
    def vm_create(self, host: HostSpec, spec: VMSpec, progress: Progress) -> VMInfo:
        with self._on(host, f"create {spec.vm_uuid}") as session:
            return lifecycle.vm_create(session, spec, progress)

    @hookimpl
    def vm_update(self, host: HostSpec, spec: VMSpec, progress: Progress) -> VMInfo:
        with self._on(host, f"update {spec.vm_uuid}") as session:
            return lifecycle.vm_update(session, spec, progress)

    @hookimpl
    def vm_delete(self, host: HostSpec, vm_uuid: str, ref: str, progress: Progress) -> None:
        with self._on(host, f"delete {vm_uuid}") as session:
            lifecycle.vm_delete(session, container_name(vm_uuid, ref), progress)

    @hookimpl
    def vm_reinstall(self, host: HostSpec, spec: VMSpec, progress: Progress) -> VMInfo:
        with self._on(host, f"reinstall {spec.vm_uuid}") as session:
            return lifecycle.vm_reinstall(session, spec, progress)

    @hookimpl
    def vm_power(self, host: HostSpec, vm_uuid: str, ref: str, action: PowerAction) -> VMInfo:
        with self._on(host, f"power {action} {vm_uuid}") as session:
            return lifecycle.vm_power(session, container_name(vm_uuid, ref), action)

    @hookimpl
    def vm_status(self, host: HostSpec, vm_uuid: str, ref: str) -> VMInfo:
        with self._on(host, f"status of {vm_uuid}") as session:
            return lifecycle.read_status(session, container_name(vm_uuid, ref))

    @hookimpl
    def vm_set_password(self, host: HostSpec, vm_uuid: str, ref: str, username: str, password: str) -> None:
        with self._on(host, f"set a password in {vm_uuid}") as session:
            guest.set_password(session, container_name(vm_uuid, ref), username, password)

    @hookimpl
    def vm_terminal_open(self, host: HostSpec, vm_uuid: str, ref: str, cols: int, rows: int) -> TerminalChannel:
        with self._on(host, f"terminal to {vm_uuid}") as session:
            return terminal.open_terminal(session, container_name(vm_uuid, ref), cols, rows)

    # ------------------------------------------------------------------ network

    @hookimpl
    def vm_ip_list(self, host: HostSpec, vm_uuid: str, ref: str) -> list[IPAddress]:
        with self._on(host, f"addresses of {vm_uuid}") as session:
            return network.ip_list(session, container_name(vm_uuid, ref))

    @hookimpl
    def nat_add(self, host: HostSpec, vm_uuid: str, ref: str, rule: NatRule, progress: Progress) -> NatRule:
        with self._on(host, f"forward port {rule.host_port} to {vm_uuid}") as session:
            progress(10, f"adding an nftables DNAT rule for port {rule.host_port}")
            return network.nat_add(session, container_name(vm_uuid, ref), rule)

    @hookimpl
    def nat_remove(self, host: HostSpec, vm_uuid: str, ref: str, rule: NatRule, progress: Progress) -> None:
        with self._on(host, f"remove the forward of port {rule.host_port}") as session:
            progress(10, f"removing the nftables DNAT rule of port {rule.host_port}")
            network.nat_remove(session, container_name(vm_uuid, ref), rule)

    @hookimpl
    def nat_sync(self, host: HostSpec, vm_uuid: str, ref: str, rules: list[NatRule]) -> None:
        with self._on(host, f"restore the forwards of {vm_uuid}") as session:
            network.nat_sync(session, container_name(vm_uuid, ref), rules)

    # ------------------------------------------------------------------ storage

    @hookimpl
    def disk_attach(self, host: HostSpec, vm_uuid: str, ref: str, disk: DiskSpec, progress: Progress) -> None:
        with self._on(host, f"attach disk {disk.name} to {vm_uuid}") as session:
            storage.disk_attach(session, container_name(vm_uuid, ref), disk, progress)

    @hookimpl
    def disk_detach(self, host: HostSpec, vm_uuid: str, ref: str, disk_name: str, progress: Progress) -> None:
        with self._on(host, f"detach disk {disk_name} from {vm_uuid}") as session:
            storage.disk_detach(session, container_name(vm_uuid, ref), disk_name, progress)

    @hookimpl
    def disk_delete(self, host: HostSpec, vm_uuid: str, ref: str, disk_name: str, progress: Progress) -> None:
        with self._on(host, f"delete disk {disk_name} of {vm_uuid}") as session:
            storage.disk_delete(session, container_name(vm_uuid, ref), disk_name, progress)

    # ------------------------------------------------------------------ backups

    @hookimpl
    def backup_create(self, host: HostSpec, vm_uuid: str, ref: str, backup_name: str, description: str,
                      progress: Progress) -> BackupInfo:
        with self._on(host, f"back up {vm_uuid}") as session:
            return backups.backup_create(session, container_name(vm_uuid, ref), backup_name, description, progress)

    @hookimpl
    def backup_restore(self, host: HostSpec, vm_uuid: str, ref: str, backup_name: str, progress: Progress) -> VMInfo:
        with self._on(host, f"restore {vm_uuid}") as session:
            return backups.backup_restore(session, container_name(vm_uuid, ref), backup_name, progress)

    @hookimpl
    def backup_delete(self, host: HostSpec, vm_uuid: str, ref: str, backup_name: str) -> None:
        with self._on(host, f"delete backup {backup_name}") as session:
            backups.backup_delete(session, container_name(vm_uuid, ref), backup_name)

    @hookimpl
    def backup_list(self, host: HostSpec) -> list[BackupInfo]:
        with self._on(host, "list backups") as session:
            return backups.backup_list(session)
