"""TestLab: a test-only engine with an in-memory back end and switches to make it fail.

It exists to test the core (hook dispatch, tasks, failure paths), not engines:
real engines are tested against real daemons. Some hooks are ``async def`` and
some plain, so both calling paths of the core are exercised.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from idcs_core import errors
from idcs_core.hookspecs import hookimpl
from idcs_core.types import (
    BackupInfo,
    HostSpec,
    HostStatus,
    ImageKind,
    IPAddress,
    NatRule,
    OSImage,
    PowerAction,
    VMInfo,
    VMSpec,
)

PASSWORD = "lab-pass"
IMAGES = [OSImage("Ubuntu 22.04", "ubuntu-22.04", "ubuntu"), OSImage("Debian 12", "debian-12", "debian"),
          OSImage("Busybox", "busybox", "other")]
# Listed, but the back end refuses to create from it (its file vanished): vm_create answers BadRequest.
VANISHED = OSImage("Vanished", "vanished-image", "lost")
TEMPLATES = [OSImage("Debian 12 template", "[datastore1] templates/debian 12", "debian", ImageKind.TEMPLATE)]
ISOS = [OSImage("Debian 12 installer", "[datastore1] iso/debian 12.iso", "debian", ImageKind.ISO),
        OSImage("Rescue CD", "rescue.iso", "other", ImageKind.ISO)]
CREATABLE = {i.file for i in IMAGES + TEMPLATES}


REF_PREFIX = "labref-"  # how TestLab's refs look: the core must hand them back, not the VM's name


@dataclass
class LabVM:
    spec: VMSpec
    ref: str = field(default_factory=lambda: f"{REF_PREFIX}{uuid.uuid4().hex}")
    status: str = "running"
    files: dict[str, str] = field(default_factory=dict)
    nat: set[tuple[int, str]] = field(default_factory=set)
    disks: dict[str, bool] = field(default_factory=dict)
    password: str | None = None
    cdrom: str | None = None  # the ISO in the CD-ROM drive
    ips: dict[str, IPAddress] = field(default_factory=dict)  # addresses vm_ip_add gave, by address


@dataclass
class LabHost:
    vms: dict[str, LabVM] = field(default_factory=dict)
    backups: dict[tuple[str, str], LabVM] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    refs: list[tuple[str, str]] = field(default_factory=list)  # (hook, ref) of every VM hook call

    def find(self, vm_uuid: str, ref: str | None) -> LabVM | None:
        """The VM ``ref`` names when it looks like a TestLab ref (else the one named ``vm_uuid``)."""
        if ref and ref.startswith(REF_PREFIX):
            return next((vm for vm in self.vms.values() if vm.ref == ref), None)
        return self.vms.get(vm_uuid)


class Faults:
    """Switches tests flip: ``fail`` names hooks that raise; ``delay`` adds seconds to hooks;
    ``down`` lists addresses that do not answer; ``ports_taken`` holds (address, port) pairs
    some other program on that host listens on (``nat_add`` answers Conflict)."""

    def __init__(self) -> None:
        self.fail: dict[str, str] = {}
        self.delay: dict[str, float] = {}
        self.down: set[str] = set()
        self.hang: set[str] = set()
        self.hung_calls = 0  # calls that entered a hang
        self.unhang = threading.Event()  # set: hanging calls return at once
        self.ports_taken: set[tuple[str, int]] = set()

    def reset(self) -> None:
        self.fail.clear()
        self.delay.clear()
        self.down.clear()
        self.hang.clear()
        self.unhang.set()  # release what still hangs, then arm again
        self.unhang = threading.Event()
        self.hung_calls = 0
        self.ports_taken.clear()


class TestLabEngine:
    """Engine type ``TestLab``: ``server_addr`` is any ``lab://name``; password ``lab-pass``."""

    __test__ = False  # not a pytest class

    def __init__(self) -> None:
        self.hosts: dict[str, LabHost] = {}
        self.faults = Faults()
        self.lock = threading.Lock()

    # -- helpers
    def _host(self, host: HostSpec, hook: str) -> LabHost:
        if host.addr in self.faults.hang:
            with self.lock:
                self.faults.hung_calls += 1
            self.faults.unhang.wait(30)
        if host.addr in self.faults.down or not host.addr.startswith("lab://"):
            raise errors.HostUnreachable(f"{host.addr}: connection refused")
        if host.password != PASSWORD:
            raise errors.HostUnreachable(f"{host.addr}: login failed")
        if hook in self.faults.delay:
            time.sleep(self.faults.delay[hook])
        if hook in self.faults.fail:
            raise RuntimeError(self.faults.fail[hook])
        with self.lock:
            lab = self.hosts.setdefault(host.addr, LabHost())
            lab.calls.append(hook)
            return lab

    def _vm(self, host: HostSpec, vm_uuid: str, hook: str, ref: str | None) -> LabVM:
        lab = self._host(host, hook)
        lab.refs.append((hook, ref or ""))
        vm = lab.find(vm_uuid, ref)
        if vm is None:
            raise errors.VMNotFound(f"{vm_uuid} ({ref}) is not on {host.addr}")
        return vm

    @staticmethod
    def _info(vm: LabVM) -> VMInfo:
        s = vm.spec
        return VMInfo(vm_uuid=s.vm_uuid, status=vm.status, power_state=f"lab-{vm.status}", vm_name=s.vm_name,
                      os_name=s.os_name, cpu_num=s.cpu_num, ram_num=s.ram_num, hdd_num=s.hdd_num,
                      cpu_usage=1.5, memory_usage=20.0, ip_addresses=["10.9.0.2"], ref=vm.ref)

    # -- lifecycle
    @hookimpl
    def engine_describe(self) -> dict[str, Any]:
        return {"title": "TestLab (in-memory, for core tests)"}

    @hookimpl
    async def host_connect(self, host: HostSpec) -> HostStatus:
        await asyncio.sleep(0)
        return await asyncio.to_thread(self.host_status, host)

    @hookimpl
    def host_status(self, host: HostSpec) -> HostStatus:
        lab = self._host(host, "host_status")
        return HostStatus(cpu_usage=12.5, memory_usage=40.0, disk_usage=30.0, vms_count=len(lab.vms),
                          version="lab-1.0")

    @hookimpl
    def host_close(self, host: HostSpec) -> None:
        lab = self.hosts.get(host.addr)
        if lab is not None:  # recorded, never raised: host_close must not fail
            lab.calls.append("host_close")

    @hookimpl
    def os_images(self, host: HostSpec) -> list[OSImage]:
        self._host(host, "os_images")
        return [*IMAGES, VANISHED, *TEMPLATES, *ISOS]

    # -- VMs
    @hookimpl
    def vm_list(self, host: HostSpec) -> list[VMInfo]:
        return [self._info(vm) for vm in self._host(host, "vm_list").vms.values()]

    @hookimpl
    def vm_create(self, host: HostSpec, spec: VMSpec, progress: Any) -> VMInfo:
        lab = self._host(host, "vm_create")
        if spec.os_name not in CREATABLE:
            raise errors.BadRequest(f"no image {spec.os_name}")
        if spec.vm_uuid in lab.vms:
            raise errors.Conflict(f"{spec.vm_uuid} exists")
        progress(50, "half way")
        vm = LabVM(spec=spec, password=spec.config.get("os_pass"))
        lab.vms[spec.vm_uuid] = vm
        return self._info(vm)

    @hookimpl
    def vm_update(self, host: HostSpec, spec: VMSpec) -> VMInfo:
        vm = self._vm(host, spec.vm_uuid, "vm_update", spec.ref)
        vm.spec = spec
        return self._info(vm)

    @hookimpl
    def vm_delete(self, host: HostSpec, vm_uuid: str, ref: str) -> None:
        lab = self._host(host, "vm_delete")
        lab.refs.append(("vm_delete", ref))
        vm = lab.find(vm_uuid, ref)
        if vm is not None:
            lab.vms.pop(vm.spec.vm_uuid, None)

    @hookimpl
    def vm_power(self, host: HostSpec, vm_uuid: str, ref: str, action: PowerAction) -> VMInfo:
        vm = self._vm(host, vm_uuid, "vm_power", ref)
        vm.status = {PowerAction.START: "running", PowerAction.HARD_OFF: "stopped", PowerAction.STOP: "stopped",
                     PowerAction.RESET: "running", PowerAction.PAUSE: "paused",
                     PowerAction.RESUME: "running"}[action]
        return self._info(vm)

    @hookimpl
    def vm_status(self, host: HostSpec, vm_uuid: str, ref: str) -> VMInfo:
        return self._info(self._vm(host, vm_uuid, "vm_status", ref))

    @hookimpl
    def vm_set_password(self, host: HostSpec, vm_uuid: str, ref: str, username: str, password: str) -> None:
        self._vm(host, vm_uuid, "vm_set_password", ref).password = password

    # -- network
    @hookimpl
    def vm_ip_list(self, host: HostSpec, vm_uuid: str, ref: str) -> list[IPAddress]:
        self._vm(host, vm_uuid, "vm_ip_list", ref)
        return [IPAddress("10.9.0.2", 4, "eth0", "02:00:00:00:00:02")]

    @hookimpl
    def vm_ip_add(self, host: HostSpec, vm_uuid: str, ref: str, request: dict[str, Any]) -> IPAddress:
        vm = self._vm(host, vm_uuid, "vm_ip_add", ref)
        ip = IPAddress(request.get("ip4_addr") or "10.9.0.3", 4, "eth1")
        vm.ips[ip.address] = ip
        return ip

    @hookimpl
    def vm_ip_remove(self, host: HostSpec, vm_uuid: str, ref: str, address: IPAddress) -> None:
        self._vm(host, vm_uuid, "vm_ip_remove", ref).ips.pop(address.address, None)

    @hookimpl
    def nat_add(self, host: HostSpec, vm_uuid: str, ref: str, rule: NatRule) -> NatRule:
        vm = self._vm(host, vm_uuid, "nat_add", ref)
        if (host.addr, rule.host_port) in self.faults.ports_taken:
            raise errors.Conflict(f"host port {rule.host_port} is in use on {host.addr} by another program")
        vm.nat.add((rule.host_port, rule.protocol))
        return NatRule(rule.host_port, rule.vm_port, rule.protocol, "10.9.0.2")

    @hookimpl
    def nat_remove(self, host: HostSpec, vm_uuid: str, ref: str, rule: NatRule) -> None:
        vm = self._host(host, "nat_remove").find(vm_uuid, ref)
        if vm:
            vm.nat.discard((rule.host_port, rule.protocol))

    # -- storage
    @hookimpl
    def disk_attach(self, host: HostSpec, vm_uuid: str, ref: str, disk: Any) -> None:
        self._vm(host, vm_uuid, "disk_attach", ref).disks[disk.name] = True

    @hookimpl
    def disk_detach(self, host: HostSpec, vm_uuid: str, ref: str, disk_name: str) -> None:
        self._vm(host, vm_uuid, "disk_detach", ref).disks[disk_name] = False

    @hookimpl
    def disk_delete(self, host: HostSpec, vm_uuid: str, ref: str, disk_name: str) -> None:
        self._vm(host, vm_uuid, "disk_delete", ref).disks.pop(disk_name, None)

    @hookimpl
    def iso_mount(self, host: HostSpec, vm_uuid: str, ref: str, iso_name: str) -> None:
        if iso_name not in {i.file for i in ISOS}:  # the core lets only the host's ISOs through
            raise errors.BadRequest(f"no ISO {iso_name}")
        self._vm(host, vm_uuid, "iso_mount", ref).cdrom = iso_name

    @hookimpl
    def iso_unmount(self, host: HostSpec, vm_uuid: str, ref: str, iso_name: str) -> None:
        vm = self._vm(host, vm_uuid, "iso_unmount", ref)
        if vm.cdrom == iso_name:
            vm.cdrom = None

    # -- backups
    @hookimpl
    def backup_create(self, host: HostSpec, vm_uuid: str, ref: str, backup_name: str, description: str) -> BackupInfo:
        vm = self._vm(host, vm_uuid, "backup_create", ref)
        lab = self._host(host, "backup_create")
        lab.backups[(vm_uuid, backup_name)] = LabVM(spec=vm.spec, status=vm.status, files=dict(vm.files))
        return BackupInfo(backup_name, vm_uuid, description, size_bytes=1234)

    @hookimpl
    def backup_restore(self, host: HostSpec, vm_uuid: str, ref: str, backup_name: str) -> VMInfo:
        lab = self._host(host, "backup_restore")
        saved = lab.backups.get((vm_uuid, backup_name))
        if saved is None:
            raise errors.NotFound(f"no backup {backup_name}")
        vm = self._vm(host, vm_uuid, "backup_restore", ref)
        vm.files = dict(saved.files)
        return self._info(vm)

    @hookimpl
    def backup_delete(self, host: HostSpec, vm_uuid: str, ref: str, backup_name: str) -> None:
        self._host(host, "backup_delete").backups.pop((vm_uuid, backup_name), None)

    @hookimpl
    def backup_list(self, host: HostSpec) -> list[BackupInfo]:
        return [BackupInfo(name, vm) for (vm, name) in self._host(host, "backup_list").backups]
