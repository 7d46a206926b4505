"""The OCInterface engine: one hook implementation per capability, each a line or two.

Each hook takes the host's cached connection, runs one function of a module
that does one job (``lifecycle``, ``network``, ``storage``,
``backups``, ``guest``, ``terminal``, ``images``, ``host``), and lets
``errors.translate`` turn Docker's errors into OpenIDCS errors. A host found
unreachable loses its cached client, so the next call connects afresh.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from idcs_core import errors
from idcs_core.hookspecs import hookimpl
from idcs_core.types import (
    BackupInfo,
    DiskSpec,
    HostOption,
    HostSpec,
    HostStatus,
    IPAddress,
    NatRule,
    OptionType,
    OSImage,
    PowerAction,
    Progress,
    TerminalChannel,
    TrafficCounters,
    VMInfo,
    VMSpec,
)
from idcs_oci import (
    __version__,
    backups,
    containers,
    guest,
    images,
    lifecycle,
    naming,
    network,
    storage,
    terminal,
    traffic,
)
from idcs_oci import host as hosts  # the module; ``host`` is each hook's HostSpec
from idcs_oci.client import OPTIONS, ClientCache, Conn
from idcs_oci.errors import translate

T = TypeVar("T")
log = logging.getLogger("idcs.oci")


def _typed(name: str, kind: OptionType = OptionType.STR, default: Any = None) -> HostOption:
    return HostOption(name, kind, default, OPTIONS[name])


# The host options, typed for the core (which validates them and fills in the defaults).
TYPED_OPTIONS: list[HostOption] = [
    _typed("timeout", OptionType.INT, 30), _typed("long_timeout", OptionType.INT, 3600),
    _typed("stop_timeout", OptionType.INT, 10), _typed("nat_bind", default="0.0.0.0"), _typed("network"),
    _typed("restart_policy", default="unless-stopped"), _typed("pull_missing", OptionType.BOOL, False),
    _typed("max_layers", OptionType.INT, 100), _typed("tls", OptionType.BOOL, False),
    _typed("tls_verify", OptionType.BOOL, True), _typed("tls_ca_cert"), _typed("tls_client_cert"),
    _typed("tls_client_key"), _typed("ssh_client", OptionType.BOOL),
]


def logged_progress(host: HostSpec, vm_uuid: str, task: Progress | None = None) -> Progress:
    """Progress that also goes to the log: each message, such as a recreation announced before it
    happens, is logged, and handed on to the task's ``progress`` when the core gave one (NAT and
    disk changes; ``nat_sync`` runs without a task)."""
    def progress(percent: int, message: str = "") -> None:
        if message:
            log.info("%s on %s: %s (%d%%)", vm_uuid, host.name, message, percent)
        if task is not None:
            task(percent, message)

    return progress


# One lock per (daemon address, VM), shared by every engine instance of this process.
_VM_LOCKS: dict[tuple[str, str], threading.Lock] = {}
_VM_LOCKS_GUARD = threading.Lock()


def vm_lock(host: HostSpec, vm_uuid: str) -> threading.Lock:
    with _VM_LOCKS_GUARD:
        return _VM_LOCKS.setdefault((host.addr, vm_uuid), threading.Lock())


class OCIEngine:
    """Docker / Podman hosts: VMs are containers named by their ``vm_uuid``."""

    def __init__(self) -> None:
        self.clients = ClientCache()

    @contextmanager
    def _conn(self, host: HostSpec, action: str) -> Iterator[Conn]:
        try:
            with translate(action):
                yield self.clients.connect(host)
        except errors.HostUnreachable:
            self.clients.drop(host)
            raise

    def _and_follow(self, host: HostSpec, vm_uuid: str, action: str, fn: Callable[..., T], *args: Any) -> T:
        """``_on_vm`` for a change that may give the VM a new address or power state (power,
        recreation): its NAT forwarders follow it under the same lock (``network.follow``)."""
        def run(conn: Conn, *a: Any) -> T:
            result = fn(conn, *a)
            network.follow(conn, vm_uuid)
            return result

        return self._on_vm(host, vm_uuid, action, run, *args)

    def _on_vm(self, host: HostSpec, vm_uuid: str, action: str, fn: Callable[..., T], *args: Any,
               exclusive: bool = True) -> T:
        """``fn(conn, *args)`` for one VM. ``exclusive`` holds the VM's lock: changes of one VM (a
        recreation above all) run one at a time within this process; other VMs and read-only
        hooks are not held up.

        If the VM's container is missing because a recreation was cut short (its container still
        parked, see ``containers.recover_parked``), the container is brought back under the VM's
        lock and ``fn`` runs again.
        """
        if exclusive:
            with vm_lock(host, vm_uuid), self._conn(host, action) as conn:
                try:
                    return fn(conn, *args)
                except errors.VMNotFound:
                    if not containers.recover_parked(conn, vm_uuid):
                        raise
                return fn(conn, *args)
        with self._conn(host, action) as conn:
            try:
                return fn(conn, *args)
            except errors.VMNotFound:
                if not self._recover(conn, vm_uuid, wait=conn.opts.timeout):
                    raise
            return fn(conn, *args)

    @staticmethod
    def _recover(conn: Conn, vm_uuid: str, wait: float) -> bool:
        """``recover_parked`` under the VM's lock; False (nothing done) if a change of the VM holds
        the lock for longer than ``wait`` seconds (0: do not wait): it is under way, not cut short."""
        lock = vm_lock(conn.host, vm_uuid)
        if not (lock.acquire(timeout=wait) if wait > 0 else lock.acquire(blocking=False)):
            return False
        try:
            return containers.recover_parked(conn, vm_uuid)
        finally:
            lock.release()

    @staticmethod
    def _follow(conn: Conn, vm_uuid: str) -> None:
        """``network.follow`` under the VM's lock if it is free (a change of the VM holding it will
        leave the forwarders right itself)."""
        lock = vm_lock(conn.host, vm_uuid)
        if not lock.acquire(blocking=False):
            return
        try:
            network.follow(conn, vm_uuid)
        except Exception as exc:  # the list stands; the next list, change or nat_sync tries again
            log.warning("NAT forwards of %s on %s not brought in step: %s", vm_uuid, conn.host.name, exc)
        finally:
            lock.release()

    # ------------------------------------------------------------------ host

    @hookimpl
    def engine_describe(self) -> dict[str, Any]:
        return {"title": "Docker / Podman", "version": __version__,
                "description": "Containers on a Docker Engine or Podman host (Docker API)",
                "homepage": "https://docs.docker.com/engine/api/", "options": TYPED_OPTIONS}

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
            return lifecycle.list_vms(conn, lambda vm: self._recover(conn, vm, wait=0),
                                      lambda vm: self._follow(conn, vm))

    @hookimpl
    def vm_create(self, host: HostSpec, spec: VMSpec, progress: Progress) -> VMInfo:
        def create(conn: Conn) -> VMInfo:
            # A parked container of this VM is its old self: restored (so the name is taken), never
            # replaced by a blank one.
            containers.recover_parked(conn, naming.check_vm_uuid(spec.vm_uuid))
            return lifecycle.create_vm(conn, spec, progress)

        return self._on_vm(host, spec.vm_uuid, f"create container {spec.vm_uuid}", create)

    @hookimpl
    def vm_update(self, host: HostSpec, spec: VMSpec, progress: Progress) -> VMInfo:
        return self._and_follow(host, spec.vm_uuid, f"update container {spec.vm_uuid}", lifecycle.update_vm, spec,
                                progress)

    @hookimpl
    def vm_delete(self, host: HostSpec, vm_uuid: str, progress: Progress) -> None:
        self._on_vm(host, vm_uuid, f"delete container {vm_uuid}", lifecycle.delete_vm, vm_uuid, progress)

    @hookimpl
    def vm_reinstall(self, host: HostSpec, spec: VMSpec, progress: Progress) -> VMInfo:
        return self._and_follow(host, spec.vm_uuid, f"reinstall container {spec.vm_uuid}",
                                lifecycle.reinstall_vm, spec, progress)

    @hookimpl
    def vm_power(self, host: HostSpec, vm_uuid: str, action: PowerAction) -> VMInfo:
        try:
            act = PowerAction(action)
        except ValueError:
            raise errors.BadRequest(f"unknown power action {action!r}") from None
        return self._and_follow(host, vm_uuid, f"{act.name.lower()} container {vm_uuid}", lifecycle.power, vm_uuid, act)

    @hookimpl
    def vm_status(self, host: HostSpec, vm_uuid: str) -> VMInfo:
        return self._on_vm(host, vm_uuid, f"status of container {vm_uuid}", lifecycle.status, vm_uuid,
                           exclusive=False)

    @hookimpl
    def vm_set_password(self, host: HostSpec, vm_uuid: str, username: str, password: str) -> None:
        self._on_vm(host, vm_uuid, f"set a password in container {vm_uuid}",
                    guest.set_password, vm_uuid, username, password)

    @hookimpl
    def vm_terminal_open(self, host: HostSpec, vm_uuid: str, cols: int, rows: int) -> TerminalChannel:
        return self._on_vm(host, vm_uuid, f"open a terminal in container {vm_uuid}",
                           terminal.open_terminal, vm_uuid, cols, rows, exclusive=False)

    # ------------------------------------------------------------------ network

    @hookimpl
    def vm_ip_list(self, host: HostSpec, vm_uuid: str) -> list[IPAddress]:
        return self._on_vm(host, vm_uuid, f"addresses of container {vm_uuid}", network.ip_list, vm_uuid,
                           exclusive=False)

    @hookimpl
    def nat_add(self, host: HostSpec, vm_uuid: str, rule: NatRule, progress: Progress) -> NatRule:
        return self._on_vm(host, vm_uuid, f"forward port {rule.host_port} to container {vm_uuid}",
                           network.add, vm_uuid, rule, logged_progress(host, vm_uuid, progress))

    @hookimpl
    def nat_remove(self, host: HostSpec, vm_uuid: str, rule: NatRule, progress: Progress) -> None:
        self._on_vm(host, vm_uuid, f"remove port {rule.host_port} of container {vm_uuid}",
                    network.remove, vm_uuid, rule, logged_progress(host, vm_uuid, progress))

    @hookimpl
    def nat_sync(self, host: HostSpec, vm_uuid: str, rules: list[NatRule]) -> None:
        self._on_vm(host, vm_uuid, f"sync ports of container {vm_uuid}", network.sync, vm_uuid, rules,
                    logged_progress(host, vm_uuid))

    @hookimpl
    def vm_traffic(self, host: HostSpec, vm_uuids: list[str]) -> dict[str, TrafficCounters]:
        with self._conn(host, "traffic counters") as conn:
            return traffic.counters(conn, vm_uuids)

    @hookimpl
    def vm_bandwidth(self, host: HostSpec, vm_uuid: str, up_mbit: int, down_mbit: int) -> None:
        self._on_vm(host, vm_uuid, f"cap the bandwidth of container {vm_uuid}", traffic.apply_caps, vm_uuid, up_mbit,
                    down_mbit)

    # ------------------------------------------------------------------ storage

    @hookimpl
    def disk_attach(self, host: HostSpec, vm_uuid: str, disk: DiskSpec, progress: Progress) -> None:
        self._and_follow(host, vm_uuid, f"attach disk {disk.name} to container {vm_uuid}", storage.attach, vm_uuid,
                         disk, logged_progress(host, vm_uuid, progress))

    @hookimpl
    def disk_detach(self, host: HostSpec, vm_uuid: str, disk_name: str, progress: Progress) -> None:
        self._and_follow(host, vm_uuid, f"detach disk {disk_name} from container {vm_uuid}",
                         storage.detach, vm_uuid, disk_name, logged_progress(host, vm_uuid, progress))

    @hookimpl
    def disk_delete(self, host: HostSpec, vm_uuid: str, disk_name: str, progress: Progress) -> None:
        self._and_follow(host, vm_uuid, f"delete disk {disk_name} of container {vm_uuid}", storage.delete, vm_uuid,
                         disk_name, logged_progress(host, vm_uuid, progress))

    # ------------------------------------------------------------------ backups

    @hookimpl
    def backup_create(self, host: HostSpec, vm_uuid: str, backup_name: str, description: str,
                      progress: Progress) -> BackupInfo:
        return self._on_vm(host, vm_uuid, f"back up container {vm_uuid}",
                           backups.create, vm_uuid, backup_name, description, progress)

    @hookimpl
    def backup_restore(self, host: HostSpec, vm_uuid: str, backup_name: str, progress: Progress) -> VMInfo:
        return self._and_follow(host, vm_uuid, f"restore container {vm_uuid} from {backup_name}",
                                backups.restore, vm_uuid, backup_name, progress)

    @hookimpl
    def backup_delete(self, host: HostSpec, vm_uuid: str, backup_name: str) -> None:
        with self._conn(host, f"delete backup {backup_name} of container {vm_uuid}") as conn:
            backups.delete(conn, vm_uuid, backup_name)

    @hookimpl
    def backup_list(self, host: HostSpec) -> list[BackupInfo]:
        with self._conn(host, "list backups") as conn:
            return backups.list_all(conn)
