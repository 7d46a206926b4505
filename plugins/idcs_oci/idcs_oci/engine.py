"""The OCInterface engine: one hook implementation per capability, each a line or two.

Each hook takes the host's cached connection, runs one function of a module
that does one job (``lifecycle``, ``power``, ``network``, ``disks``,
``backups``, ``guest``, ``terminal``, ``images``, ``hosts``), and lets
``errmap.translate`` turn Docker's errors into OpenIDCS errors. A host found
unreachable loses its cached client, so the next call connects afresh.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from idcs_core import errors
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
from idcs_oci import __version__, backups, disks, guest, hosts, images, lifecycle, network, power, terminal
from idcs_oci.client import OPTIONS, ClientCache, Conn
from idcs_oci.errmap import translate


class OCIEngine:
    """Docker / Podman hosts: VMs are containers named by their ``vm_uuid``."""

    def __init__(self) -> None:
        self.clients = ClientCache()
        self._vm_locks: dict[tuple[str, str], threading.Lock] = {}
        self._vm_locks_guard = threading.Lock()

    @contextmanager
    def _conn(self, host: HostSpec, action: str) -> Iterator[Conn]:
        try:
            with translate(action):
                yield self.clients.connect(host)
        except errors.HostUnreachable:
            self.clients.drop(host)
            raise

    @contextmanager
    def _vm(self, host: HostSpec, vm_uuid: str, action: str) -> Iterator[Conn]:
        """``_conn`` holding the VM's lock: changes of one VM (a recreation above all) run one at
        a time within this process; other VMs and read-only hooks are not held up."""
        with self._vm_locks_guard:
            lock = self._vm_locks.setdefault((host.addr, vm_uuid), threading.Lock())
        with lock, self._conn(host, action) as conn:
            yield conn

    # ------------------------------------------------------------------ host

    @hookimpl
    def engine_describe(self) -> dict[str, Any]:
        return {"title": "Docker / Podman", "version": __version__,
                "description": "Containers on a Docker Engine or Podman host (Docker API)",
                "homepage": "https://docs.docker.com/engine/api/", "options": dict(OPTIONS)}

    @hookimpl
    def host_connect(self, host: HostSpec) -> HostStatus:
        self.clients.drop(host)  # address or credentials may have changed: connect afresh
        with self._conn(host, f"connect to {host.addr}") as conn:
            return hosts.status(conn)

    @hookimpl
    def host_status(self, host: HostSpec) -> HostStatus:
        with self._conn(host, f"status of host {host.name}") as conn:
            return hosts.status(conn)

    @hookimpl
    def host_close(self, host: HostSpec) -> None:
        self.clients.drop(host)

    @hookimpl
    def os_images(self, host: HostSpec) -> list[OSImage]:
        with self._conn(host, "list images") as conn:
            return images.list_os_images(conn)

    # ------------------------------------------------------------------ VMs

    @hookimpl
    def vm_list(self, host: HostSpec) -> list[VMInfo]:
        with self._conn(host, "list containers") as conn:
            return lifecycle.list_vms(conn)

    @hookimpl
    def vm_create(self, host: HostSpec, spec: VMSpec, progress: Progress) -> VMInfo:
        with self._vm(host, spec.vm_uuid, f"create container {spec.vm_uuid}") as conn:
            return lifecycle.create_vm(conn, spec, progress)

    @hookimpl
    def vm_update(self, host: HostSpec, spec: VMSpec, progress: Progress) -> VMInfo:
        with self._vm(host, spec.vm_uuid, f"update container {spec.vm_uuid}") as conn:
            return lifecycle.update_vm(conn, spec, progress)

    @hookimpl
    def vm_delete(self, host: HostSpec, vm_uuid: str, progress: Progress) -> None:
        with self._vm(host, vm_uuid, f"delete container {vm_uuid}") as conn:
            lifecycle.delete_vm(conn, vm_uuid, progress)

    @hookimpl
    def vm_reinstall(self, host: HostSpec, spec: VMSpec, progress: Progress) -> VMInfo:
        with self._vm(host, spec.vm_uuid, f"reinstall container {spec.vm_uuid}") as conn:
            return lifecycle.reinstall_vm(conn, spec, progress)

    @hookimpl
    def vm_power(self, host: HostSpec, vm_uuid: str, action: PowerAction) -> VMInfo:
        try:
            act = PowerAction(action)
        except ValueError:
            raise errors.BadRequest(f"unknown power action {action!r}") from None
        with self._vm(host, vm_uuid, f"{act.name.lower()} container {vm_uuid}") as conn:
            return power.apply(conn, vm_uuid, act)

    @hookimpl
    def vm_status(self, host: HostSpec, vm_uuid: str) -> VMInfo:
        with self._conn(host, f"status of container {vm_uuid}") as conn:
            return lifecycle.status(conn, vm_uuid)

    @hookimpl
    def vm_set_password(self, host: HostSpec, vm_uuid: str, username: str, password: str) -> None:
        with self._vm(host, vm_uuid, f"set a password in container {vm_uuid}") as conn:
            guest.set_password(conn, vm_uuid, username, password)

    @hookimpl
    def vm_terminal_open(self, host: HostSpec, vm_uuid: str, cols: int, rows: int) -> TerminalChannel:
        with self._conn(host, f"open a terminal in container {vm_uuid}") as conn:
            return terminal.open_terminal(conn, vm_uuid, cols, rows)

    # ------------------------------------------------------------------ network

    @hookimpl
    def vm_ip_list(self, host: HostSpec, vm_uuid: str) -> list[IPAddress]:
        with self._conn(host, f"addresses of container {vm_uuid}") as conn:
            return network.ip_list(conn, vm_uuid)

    @hookimpl
    def nat_add(self, host: HostSpec, vm_uuid: str, rule: NatRule) -> NatRule:
        with self._vm(host, vm_uuid, f"forward port {rule.host_port} to container {vm_uuid}") as conn:
            return network.add(conn, vm_uuid, rule)

    @hookimpl
    def nat_remove(self, host: HostSpec, vm_uuid: str, rule: NatRule) -> None:
        with self._vm(host, vm_uuid, f"remove port {rule.host_port} of container {vm_uuid}") as conn:
            network.remove(conn, vm_uuid, rule)

    @hookimpl
    def nat_sync(self, host: HostSpec, vm_uuid: str, rules: list[NatRule]) -> None:
        with self._vm(host, vm_uuid, f"sync ports of container {vm_uuid}") as conn:
            network.sync(conn, vm_uuid, rules)

    # ------------------------------------------------------------------ storage

    @hookimpl
    def disk_attach(self, host: HostSpec, vm_uuid: str, disk: DiskSpec) -> None:
        with self._vm(host, vm_uuid, f"attach disk {disk.name} to container {vm_uuid}") as conn:
            disks.attach(conn, vm_uuid, disk)

    @hookimpl
    def disk_detach(self, host: HostSpec, vm_uuid: str, disk_name: str) -> None:
        with self._vm(host, vm_uuid, f"detach disk {disk_name} from container {vm_uuid}") as conn:
            disks.detach(conn, vm_uuid, disk_name)

    @hookimpl
    def disk_delete(self, host: HostSpec, vm_uuid: str, disk_name: str) -> None:
        with self._vm(host, vm_uuid, f"delete disk {disk_name} of container {vm_uuid}") as conn:
            disks.delete(conn, vm_uuid, disk_name)

    # ------------------------------------------------------------------ backups

    @hookimpl
    def backup_create(self, host: HostSpec, vm_uuid: str, backup_name: str, description: str,
                      progress: Progress) -> BackupInfo:
        with self._vm(host, vm_uuid, f"back up container {vm_uuid}") as conn:
            return backups.create(conn, vm_uuid, backup_name, description, progress)

    @hookimpl
    def backup_restore(self, host: HostSpec, vm_uuid: str, backup_name: str, progress: Progress) -> VMInfo:
        with self._vm(host, vm_uuid, f"restore container {vm_uuid} from {backup_name}") as conn:
            return backups.restore(conn, vm_uuid, backup_name, progress)

    @hookimpl
    def backup_delete(self, host: HostSpec, vm_uuid: str, backup_name: str) -> None:
        with self._conn(host, f"delete backup {backup_name} of container {vm_uuid}") as conn:
            backups.delete(conn, vm_uuid, backup_name)

    @hookimpl
    def backup_list(self, host: HostSpec) -> list[BackupInfo]:
        with self._conn(host, "list backups") as conn:
            return backups.list_all(conn)
