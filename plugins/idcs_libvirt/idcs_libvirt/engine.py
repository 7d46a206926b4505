"""The QEMU engine (libvirt): hook implementations only, each a thin call into one module.

Registered as engine type ``QEMU`` through the entry point group ``idcs.engines``. The hooks
are plain functions (libvirt-python blocks): the core runs them in worker threads. Each runs
inside ``self._on(host, what)``, which hands it the host's cached connection and turns
libvirt faults into ``idcs_core.errors``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import libvirt

from idcs_core.hookspecs import hookimpl
from idcs_core.types import (
    BackupInfo,
    ConsoleEndpoint,
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
from idcs_libvirt import backups, console, images, lifecycle, network, storage
from idcs_libvirt import host as hostinfo
from idcs_libvirt.client import connections, open_connection
from idcs_libvirt.errors import translated
from idcs_libvirt.terminal import SerialTerminal


class LibvirtEngine:
    """OpenIDCS engine for QEMU/KVM virtual machines on libvirt hosts."""

    def __init__(self) -> None:
        self.conns = connections()
        self.facts = lifecycle.FactsCache()

    @contextlib.contextmanager
    def _on(self, host: HostSpec, what: str) -> Iterator[libvirt.virConnect]:
        with translated(self.conns, host, what) as conn:
            yield conn

    # ------------------------------------------------------------------ host

    @hookimpl
    def engine_describe(self) -> dict[str, Any]:
        return {"title": "QEMU / KVM (libvirt)",
                "description": "Full virtual machines on QEMU/KVM through libvirt: copy-on-write disks in a "
                               "storage pool, a NAT network with DHCP, nftables port forwards, snapshots as "
                               "backups, VNC and serial consoles.",
                "homepage": "https://libvirt.org/",
                "options": list(hostinfo.OPTIONS)}

    @hookimpl
    def host_connect(self, host: HostSpec) -> HostStatus:
        self.conns.drop(host)  # new address or credentials: prove them afresh
        with self._on(host, "connect") as conn:
            return hostinfo.host_status(conn)

    @hookimpl
    def host_status(self, host: HostSpec) -> HostStatus:
        with self._on(host, "host status") as conn:
            return hostinfo.host_status(conn)

    @hookimpl
    def host_close(self, host: HostSpec) -> None:
        with contextlib.suppress(Exception):
            self.conns.drop(host)

    @hookimpl
    def os_images(self, host: HostSpec) -> list[OSImage]:
        with self._on(host, "list images") as conn:
            return images.list_images(conn, hostinfo.settings(host).pool)

    # ------------------------------------------------------------------ VMs

    @hookimpl
    def vm_list(self, host: HostSpec) -> list[VMInfo]:
        with self._on(host, "list domains") as conn:
            return lifecycle.vm_list(conn, self.facts)

    @hookimpl
    def vm_create(self, host: HostSpec, spec: VMSpec, progress: Progress) -> VMInfo:
        with self._on(host, f"create {spec.vm_uuid}") as conn:
            return lifecycle.vm_create(conn, hostinfo.settings(host), spec, self.facts, progress)

    @hookimpl
    def vm_update(self, host: HostSpec, spec: VMSpec, progress: Progress) -> VMInfo:
        with self._on(host, f"update {spec.vm_uuid}") as conn:
            dom = lifecycle.lookup(conn, spec.vm_uuid, spec.ref)
            return lifecycle.vm_update(conn, dom, spec, self.facts, progress)

    @hookimpl
    def vm_delete(self, host: HostSpec, vm_uuid: str, ref: str, progress: Progress) -> None:
        with self._on(host, f"delete {vm_uuid}") as conn:
            lifecycle.vm_delete(conn, hostinfo.settings(host), vm_uuid, ref, self.facts, progress)

    @hookimpl
    def vm_power(self, host: HostSpec, vm_uuid: str, ref: str, action: PowerAction) -> VMInfo:
        with self._on(host, f"{action} {vm_uuid}") as conn:
            dom = lifecycle.lookup(conn, vm_uuid, ref)
            return lifecycle.vm_power(conn, hostinfo.settings(host), dom, action, self.facts)

    @hookimpl
    def vm_status(self, host: HostSpec, vm_uuid: str, ref: str) -> VMInfo:
        with self._on(host, f"status of {vm_uuid}") as conn:
            return lifecycle.info(conn, lifecycle.lookup(conn, vm_uuid, ref), self.facts)

    @hookimpl
    def vm_set_password(self, host: HostSpec, vm_uuid: str, ref: str, username: str, password: str) -> None:
        with self._on(host, f"set the password in {vm_uuid}") as conn:
            lifecycle.set_password(lifecycle.lookup(conn, vm_uuid, ref), username, password)

    # ------------------------------------------------------------------ console

    @hookimpl
    def vm_console(self, host: HostSpec, vm_uuid: str, ref: str) -> ConsoleEndpoint:
        with self._on(host, f"console of {vm_uuid}") as conn:
            return console.vm_console(hostinfo.settings(host), lifecycle.lookup(conn, vm_uuid, ref))

    @hookimpl
    def vm_terminal_open(self, host: HostSpec, vm_uuid: str, ref: str, cols: int, rows: int) -> TerminalChannel:
        with self._on(host, f"serial console of {vm_uuid}") as conn:
            uuid = lifecycle.lookup(conn, vm_uuid, ref).UUIDString()
            return SerialTerminal(open_connection(host), uuid)

    # ------------------------------------------------------------------ network

    @hookimpl
    def vm_ip_list(self, host: HostSpec, vm_uuid: str, ref: str) -> list[IPAddress]:
        with self._on(host, f"addresses of {vm_uuid}") as conn:
            return network.ip_list(conn, lifecycle.lookup(conn, vm_uuid, ref))

    def _target(self, host: HostSpec, vm_uuid: str, ref: str, what: str) -> network.Target:
        """Looks the VM's forward target up when a NAT change needs it (not before its checks)."""
        def find() -> tuple[str, str | None]:
            with self._on(host, what) as conn:
                return network.forward_target(conn, lifecycle.lookup(conn, vm_uuid, ref), vm_uuid)

        return find

    @hookimpl
    def nat_add(self, host: HostSpec, vm_uuid: str, ref: str, rule: NatRule, progress: Progress) -> NatRule:
        target = self._target(host, vm_uuid, ref, f"forward to {vm_uuid}")
        return network.nat_add(hostinfo.settings(host), vm_uuid, rule, target, progress)

    @hookimpl
    def nat_remove(self, host: HostSpec, vm_uuid: str, ref: str, rule: NatRule, progress: Progress) -> None:
        network.nat_remove(hostinfo.settings(host), vm_uuid, rule, progress)

    @hookimpl
    def nat_sync(self, host: HostSpec, vm_uuid: str, ref: str, rules: list[NatRule]) -> None:
        target = self._target(host, vm_uuid, ref, f"forwards of {vm_uuid}")
        network.nat_sync(hostinfo.settings(host), vm_uuid, rules, target)

    # ------------------------------------------------------------------ storage

    @hookimpl
    def disk_attach(self, host: HostSpec, vm_uuid: str, ref: str, disk: DiskSpec, progress: Progress) -> None:
        with self._on(host, f"attach {disk.name} to {vm_uuid}") as conn:
            dom = lifecycle.lookup(conn, vm_uuid, ref)
            storage.disk_attach(conn, hostinfo.settings(host), dom, dom.name(), disk, progress)

    @hookimpl
    def disk_detach(self, host: HostSpec, vm_uuid: str, ref: str, disk_name: str, progress: Progress) -> None:
        with self._on(host, f"detach {disk_name} from {vm_uuid}") as conn:
            dom = lifecycle.lookup(conn, vm_uuid, ref)
            storage.disk_detach(conn, hostinfo.settings(host), dom, dom.name(), disk_name, progress)

    @hookimpl
    def disk_delete(self, host: HostSpec, vm_uuid: str, ref: str, disk_name: str, progress: Progress) -> None:
        with self._on(host, f"delete {disk_name} of {vm_uuid}") as conn:
            try:
                dom = lifecycle.lookup(conn, vm_uuid, ref)
            except Exception:
                dom = None
            storage.disk_delete(conn, hostinfo.settings(host), dom, vm_uuid, disk_name, progress)

    @hookimpl
    def iso_mount(self, host: HostSpec, vm_uuid: str, ref: str, iso_name: str) -> None:
        with self._on(host, f"insert {iso_name} into {vm_uuid}") as conn:
            storage.iso_mount(conn, hostinfo.settings(host), lifecycle.lookup(conn, vm_uuid, ref), iso_name)

    @hookimpl
    def iso_unmount(self, host: HostSpec, vm_uuid: str, ref: str, iso_name: str) -> None:
        with self._on(host, f"eject {iso_name} from {vm_uuid}") as conn:
            storage.iso_unmount(conn, hostinfo.settings(host), lifecycle.lookup(conn, vm_uuid, ref), iso_name)

    # ------------------------------------------------------------------ backups

    @hookimpl
    def backup_create(self, host: HostSpec, vm_uuid: str, ref: str, backup_name: str, description: str,
                      progress: Progress) -> BackupInfo:
        with self._on(host, f"back up {vm_uuid}") as conn:
            dom = lifecycle.lookup(conn, vm_uuid, ref)
            return backups.backup_create(dom, dom.name(), backup_name, description, progress)

    @hookimpl
    def backup_restore(self, host: HostSpec, vm_uuid: str, ref: str, backup_name: str,
                       progress: Progress) -> VMInfo:
        with self._on(host, f"restore {vm_uuid}") as conn:
            dom = lifecycle.lookup(conn, vm_uuid, ref)
            backups.backup_restore(dom, backup_name, progress)
            return lifecycle.info(conn, dom, self.facts)  # re-reads the facts: a snapshot holds its XML

    @hookimpl
    def backup_delete(self, host: HostSpec, vm_uuid: str, ref: str, backup_name: str) -> None:
        with self._on(host, f"delete backup of {vm_uuid}") as conn:
            try:
                dom = lifecycle.lookup(conn, vm_uuid, ref)
            except Exception:
                return
            backups.backup_delete(dom, backup_name)

    @hookimpl
    def backup_list(self, host: HostSpec) -> list[BackupInfo]:
        with self._on(host, "list backups") as conn:
            return backups.backup_list(conn)
