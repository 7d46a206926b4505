"""The LXD engine: hook implementations only, each a thin call into one module.

Registered as engine type ``LXD`` through the entry point group ``idcs.engines``;
the core instantiates ``LXDEngine()`` and calls these hooks in worker threads.
Every hook runs inside ``self._on(host, what)``, which hands it the host's
cached client and turns connection and LXD errors into ``idcs_core.errors``.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any

from pylxd import Client

from idcs_core.hookspecs import hookimpl
from idcs_core.types import (
    BackupInfo,
    DiskSpec,
    HostOption,
    HostSpec,
    HostStatus,
    ImageKind,
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
from idcs_lxd import backups, guest, images, lifecycle, network, storage, traffic
from idcs_lxd import host as hostinfo
from idcs_lxd.client import ClientCache, parse_addr
from idcs_lxd.errors import translated
from idcs_lxd.terminal import Terminal

OPTIONS = {
    "cert_dir": "where the engine keeps its client certificate and the server certificates it pinned on "
                "first use, for https hosts (default ~/.config/idcs/lxd)",
    "server_cert": "the server certificate to accept (PEM text, path of a PEM file, or its SHA-256 "
                   "fingerprint): pinned from the first connection; the secure way for https hosts",
    "verify_tls": "true: the server certificate must chain to a public CA and name the host, nothing is "
                  "pinned (default false: the certificate seen first is pinned, trust on first use)",
    "project": "LXD/Incus project to work in (default: default)",
    "pool": "storage pool for new instances and disks (default: the default profile's root pool)",
    "profiles": "profiles of new instances, list or comma-separated (default: default)",
    "nat_listen": "host address NAT forwards listen on (default 0.0.0.0)",
    "backup_dir": "also export each backup as an archive into this directory (default: snapshots only)",
    "iso_dir": "directory of ISO files for VMs (local daemons only)",
    "stop_timeout": "seconds a graceful stop/restart may take before it is forced (default 30)",
    "timeout": "seconds to wait for one API answer (default 60)",
    "connect_timeout": "seconds to wait for the connection (default 5)",
}



def _typed(name: str, kind: OptionType = OptionType.STR, default: Any = None) -> HostOption:
    return HostOption(name, kind, default, OPTIONS[name])


# The host options, typed for the core (which validates them and fills in the defaults).
TYPED_OPTIONS: list[HostOption] = [
    _typed("cert_dir"), _typed("server_cert"), _typed("verify_tls", OptionType.BOOL, False), _typed("project"),
    _typed("pool"), _typed("profiles"), _typed("nat_listen", default="0.0.0.0"), _typed("backup_dir"),
    _typed("iso_dir"), _typed("stop_timeout", OptionType.INT, 30), _typed("timeout", OptionType.INT, 60),
    _typed("connect_timeout", OptionType.INT, 5),
]


class LXDEngine:
    """OpenIDCS engine for LXD and Incus hosts (containers; VMs where the host has them)."""

    def __init__(self) -> None:
        self.clients = ClientCache()
        self.sampler = lifecycle.CpuSampler()

    @contextlib.contextmanager
    def _on(self, host: HostSpec, what: str) -> Iterator[Client]:
        with translated(self.clients, host, what):
            yield self.clients.get(host)

    # ------------------------------------------------------------------ lifecycle

    @hookimpl
    def engine_describe(self) -> dict[str, Any]:
        return {"title": "LXD / Incus",
                "description": "System containers (and VMs) on LXD 5.x or Incus 6.x, over the unix socket "
                               "or https with a client certificate.",
                "options": TYPED_OPTIONS}

    @hookimpl
    def host_connect(self, host: HostSpec) -> HostStatus:
        self.clients.drop(host)  # new address or credentials: prove them afresh
        with self._on(host, "connect") as client:
            return hostinfo.host_status(client, host)

    @hookimpl
    def host_status(self, host: HostSpec) -> HostStatus:
        with self._on(host, "host status") as client:
            return hostinfo.host_status(client, host)

    @hookimpl
    def host_close(self, host: HostSpec) -> None:
        with contextlib.suppress(Exception):
            self.clients.drop(host)

    @hookimpl
    def os_images(self, host: HostSpec) -> list[OSImage]:
        with self._on(host, "list images") as client:
            isos = images.list_isos(client, host, parse_addr(host.addr).is_local)
            return images.list_images(client) + [dataclasses.replace(i, kind=ImageKind.ISO) for i in isos]

    # ------------------------------------------------------------------ VMs

    @hookimpl
    def vm_list(self, host: HostSpec) -> list[VMInfo]:
        with self._on(host, "list instances") as client:
            return lifecycle.vm_list(client, host, self.sampler)

    @hookimpl
    def vm_create(self, host: HostSpec, spec: VMSpec, progress: Progress) -> VMInfo:
        with self._on(host, f"create {spec.vm_uuid}") as client:
            return lifecycle.vm_create(client, host, spec, self.sampler, progress)

    @hookimpl
    def vm_update(self, host: HostSpec, spec: VMSpec, progress: Progress) -> VMInfo:
        with self._on(host, f"update {spec.vm_uuid}") as client:
            return lifecycle.vm_update(client, host, spec, self.sampler, progress)

    @hookimpl
    def vm_delete(self, host: HostSpec, vm_uuid: str, progress: Progress) -> None:
        with self._on(host, f"delete {vm_uuid}") as client:
            lifecycle.vm_delete(client, vm_uuid, progress)

    @hookimpl
    def vm_reinstall(self, host: HostSpec, spec: VMSpec, progress: Progress) -> VMInfo:
        with self._on(host, f"reinstall {spec.vm_uuid}") as client:
            return lifecycle.vm_reinstall(client, host, spec, self.sampler, progress)

    @hookimpl
    def vm_power(self, host: HostSpec, vm_uuid: str, action: PowerAction) -> VMInfo:
        with self._on(host, f"power {action} {vm_uuid}") as client:
            return lifecycle.vm_power(client, host, vm_uuid, action, self.sampler)

    @hookimpl
    def vm_status(self, host: HostSpec, vm_uuid: str) -> VMInfo:
        with self._on(host, f"status of {vm_uuid}") as client:
            return lifecycle.info_of(client, host, self.sampler, vm_uuid)

    @hookimpl
    def vm_set_password(self, host: HostSpec, vm_uuid: str, username: str, password: str) -> None:
        with self._on(host, f"set password in {vm_uuid}") as client:
            guest.set_password(client, vm_uuid, username, password)

    @hookimpl
    def vm_terminal_open(self, host: HostSpec, vm_uuid: str, cols: int, rows: int) -> TerminalChannel:
        with self._on(host, f"terminal to {vm_uuid}") as client:
            return Terminal(client, vm_uuid, cols, rows)

    # ------------------------------------------------------------------ network

    @hookimpl
    def vm_ip_list(self, host: HostSpec, vm_uuid: str) -> list[IPAddress]:
        with self._on(host, f"addresses of {vm_uuid}") as client:
            return network.ip_list(client, vm_uuid)

    @hookimpl
    def nat_add(self, host: HostSpec, vm_uuid: str, rule: NatRule) -> NatRule:
        with self._on(host, f"NAT {rule.host_port}->{vm_uuid}:{rule.vm_port}") as client:
            return network.nat_add(client, host, vm_uuid, rule)

    @hookimpl
    def nat_remove(self, host: HostSpec, vm_uuid: str, rule: NatRule) -> None:
        with self._on(host, f"remove NAT {rule.host_port} of {vm_uuid}") as client:
            network.nat_remove(client, vm_uuid, rule)

    @hookimpl
    def nat_sync(self, host: HostSpec, vm_uuid: str, rules: list[NatRule]) -> None:
        with self._on(host, f"sync NAT of {vm_uuid}") as client:
            network.nat_sync(client, host, vm_uuid, rules)

    @hookimpl
    def vm_traffic(self, host: HostSpec, vm_uuids: list[str]) -> dict[str, TrafficCounters]:
        with self._on(host, "traffic counters") as client:
            return traffic.counters(client, vm_uuids)

    @hookimpl
    def vm_bandwidth(self, host: HostSpec, vm_uuid: str, up_mbit: int, down_mbit: int) -> None:
        with self._on(host, f"cap the bandwidth of {vm_uuid}") as client:
            traffic.apply_caps(client, vm_uuid, up_mbit, down_mbit, parse_addr(host.addr).is_local)

    # ------------------------------------------------------------------ storage

    @hookimpl
    def disk_attach(self, host: HostSpec, vm_uuid: str, disk: DiskSpec) -> None:
        with self._on(host, f"attach disk {disk.name} to {vm_uuid}") as client:
            storage.disk_attach(client, host, vm_uuid, disk)

    @hookimpl
    def disk_detach(self, host: HostSpec, vm_uuid: str, disk_name: str) -> None:
        with self._on(host, f"detach disk {disk_name} from {vm_uuid}") as client:
            storage.disk_detach(client, vm_uuid, disk_name)

    @hookimpl
    def disk_delete(self, host: HostSpec, vm_uuid: str, disk_name: str) -> None:
        with self._on(host, f"delete disk {disk_name} of {vm_uuid}") as client:
            storage.disk_delete(client, host, vm_uuid, disk_name)

    @hookimpl
    def iso_mount(self, host: HostSpec, vm_uuid: str, iso_name: str) -> None:
        with self._on(host, f"insert {iso_name} into {vm_uuid}") as client:
            storage.iso_mount(client, host, vm_uuid, iso_name, parse_addr(host.addr).is_local)

    @hookimpl
    def iso_unmount(self, host: HostSpec, vm_uuid: str, iso_name: str) -> None:
        with self._on(host, f"eject {iso_name} from {vm_uuid}") as client:
            storage.iso_unmount(client, vm_uuid, iso_name)

    # ------------------------------------------------------------------ backups

    @hookimpl
    def backup_create(self, host: HostSpec, vm_uuid: str, backup_name: str, description: str,
                      progress: Progress) -> BackupInfo:
        with self._on(host, f"back up {vm_uuid}") as client:
            return backups.backup_create(client, host, vm_uuid, backup_name, description, progress)

    @hookimpl
    def backup_restore(self, host: HostSpec, vm_uuid: str, backup_name: str, progress: Progress) -> VMInfo:
        with self._on(host, f"restore {vm_uuid} from {backup_name}") as client:
            return backups.backup_restore(client, host, vm_uuid, backup_name, self.sampler, progress)

    @hookimpl
    def backup_delete(self, host: HostSpec, vm_uuid: str, backup_name: str) -> None:
        with self._on(host, f"delete backup {backup_name} of {vm_uuid}") as client:
            backups.backup_delete(client, host, vm_uuid, backup_name)

    @hookimpl
    def backup_list(self, host: HostSpec) -> list[BackupInfo]:
        with self._on(host, "list backups") as client:
            return backups.backup_list(client, host)

