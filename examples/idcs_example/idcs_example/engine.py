"""The ExampleLab engine: every OpenIDCS engine hook, implemented against FakeCloud.

Copy this file to start an engine of your own: replace ``fakecloud`` calls with your
SDK's, keep the shapes. Each method is one hook of ``idcs_core.hookspecs.EngineSpec``
(same name, a subset of its arguments in any order), marked ``@hookimpl``. The hooks
you implement are your engine's capabilities; leave one out and the API answers
"not supported by this engine" (1006) for it without calling you.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from idcs_core import errors
from idcs_core.hookspecs import hookimpl
from idcs_core.types import (
    BackupInfo,
    ConsoleEndpoint,
    ConsoleKind,
    DiskSpec,
    HostSpec,
    HostStatus,
    ImageKind,
    IPAddress,
    NatRule,
    OSImage,
    PowerAction,
    Progress,
    ProxyRule,
    TerminalChannel,
    TrafficCounters,
    VMInfo,
    VMSpec,
)
from idcs_example import fakecloud

# The API's power words (PowerAction) -> FakeCloud's verbs.
POWER = {PowerAction.START: "start", PowerAction.HARD_OFF: "stop", PowerAction.STOP: "stop",
         PowerAction.RESET: "reset", PowerAction.PAUSE: "pause", PowerAction.RESUME: "resume"}


@contextlib.contextmanager
def backend_errors(what: str) -> Iterator[None]:
    """Turn FakeCloud's errors into OpenIDCS errors (and so into business codes)."""
    try:
        yield
    except (fakecloud.Unreachable, fakecloud.LoginFailed) as exc:
        raise errors.HostUnreachable(f"{what}: {exc}") from exc  # 1003
    except fakecloud.NoSuchVM as exc:
        raise errors.VMNotFound(f"{what}: {exc}") from exc  # 1002
    except (fakecloud.AlreadyExists, fakecloud.PortTaken) as exc:
        raise errors.Conflict(f"{what}: {exc}") from exc  # 4002
    except fakecloud.UnknownImage as exc:
        raise errors.BadRequest(f"{what}: {exc}") from exc  # 400
    except fakecloud.CloudError as exc:
        raise errors.VMOperationFailed(f"{what}: {exc}") from exc  # 1005


def cloud(host: HostSpec) -> fakecloud.FakeCloud:
    """Log in to the host. A real engine would keep one session per host (see ``host_close``)."""
    with backend_errors(f"host {host.name}"):
        return fakecloud.connect(host.addr, host.user, host.password)


def vm_info(vm: fakecloud.FakeVM) -> VMInfo:
    return VMInfo(vm_uuid=vm.name, status=vm.state, power_state=vm.state.upper(), vm_name=vm.name,
                  os_name=vm.image, cpu_num=vm.cpu, ram_num=vm.ram_mb, hdd_num=vm.hdd_gb,
                  cpu_usage=1.0 if vm.state == "running" else 0.0, ip_addresses=list(vm.ips))


class ExampleEngine:
    """Registered under the engine type ``ExampleLab`` (see pyproject.toml)."""

    # ------------------------------------------------------------------ lifecycle of a host

    @hookimpl
    def engine_describe(self) -> dict[str, Any]:
        return {"title": "Example lab (FakeCloud)",
                "description": "The example engine of the plugin author's guide, on an in-process fake back end.",
                "homepage": "https://example.invalid/idcs-example",
                "options": []}  # typed host options: a list of idcs_core.types.HostOption (none here)

    @hookimpl
    def host_connect(self, host: HostSpec) -> HostStatus:
        return _status(cloud(host))

    @hookimpl
    async def host_status(self, host: HostSpec) -> HostStatus:
        # An ``async def`` hook is awaited on the server's event loop: it must never block.
        # FakeCloud answers from memory, so this one may be async; blocking SDK calls belong
        # in plain ``def`` hooks, which the core runs in a worker thread.
        return _status(cloud(host))

    @hookimpl
    def host_power(self, host: HostSpec, action: str) -> None:
        # Out of band (like IPMI), so "start" works while the host is down.
        with backend_errors(f"{action} host {host.name}"):
            fakecloud.power_switch(host.addr, host.user, host.password, action)

    @hookimpl
    def host_close(self, host: HostSpec) -> None:
        pass  # no session to release: ``cloud()`` logs in on every call

    @hookimpl
    def os_images(self, host: HostSpec) -> list[OSImage]:
        cloud(host)
        # ``kind`` tells the core what each one is for: VMs are created from images, ISOs are mounted
        return [OSImage(name=title, file=file, family="fakeos",
                        kind=ImageKind.ISO if file.endswith(".iso") else ImageKind.IMAGE)
                for file, title in fakecloud.IMAGES.items()]

    # ------------------------------------------------------------------ VMs

    @hookimpl
    def vm_list(self, host: HostSpec) -> list[VMInfo]:
        c = cloud(host)
        with c.lock:
            return [vm_info(vm) for vm in c.vms.values()]

    @hookimpl
    def vm_create(self, host: HostSpec, spec: VMSpec, progress: Progress) -> VMInfo:
        c = cloud(host)
        progress(20, f"creating {spec.vm_uuid} from {spec.os_name}")
        with backend_errors(f"create {spec.vm_uuid}"):
            vm = c.create_vm(spec.vm_uuid, spec.os_name, spec.cpu_num, spec.ram_num, spec.hdd_num)
            if spec.config.get("os_pass"):
                progress(80, "setting the root password")
                c.set_password(vm.name, "root", spec.config["os_pass"])
        return vm_info(vm)

    @hookimpl
    def vm_update(self, host: HostSpec, spec: VMSpec, progress: Progress) -> VMInfo:
        c = cloud(host)
        with backend_errors(f"update {spec.vm_uuid}"), c.lock:
            vm = c.vm(spec.vm_uuid)
            if spec.hdd_num < vm.hdd_gb:
                raise errors.BadRequest(f"the disk of {vm.name} cannot shrink below {vm.hdd_gb} GB")
            vm.cpu, vm.ram_mb, vm.hdd_gb = spec.cpu_num, spec.ram_num, spec.hdd_num
            return vm_info(vm)

    @hookimpl
    def vm_delete(self, host: HostSpec, vm_uuid: str, progress: Progress) -> None:
        cloud(host).delete_vm(vm_uuid)  # deleting a VM that is gone succeeds

    @hookimpl
    def vm_reinstall(self, host: HostSpec, spec: VMSpec, progress: Progress) -> VMInfo:
        c = cloud(host)
        with backend_errors(f"reinstall {spec.vm_uuid}"):
            old = c.vm(spec.vm_uuid)
            forwards = [f for f in c.forwards.values() if f.vm_name == old.name]
            ips = list(old.ips)
            c.delete_vm(old.name)  # also drops its forwards: put them back below
            progress(50, f"installing {spec.os_name}")
            vm = c.create_vm(spec.vm_uuid, spec.os_name, spec.cpu_num, spec.ram_num, spec.hdd_num)
            vm.ips = ips  # keep the network identity
            for f in forwards:
                c.forward(f.host_port, vm.name, f.vm_port, f.protocol)
            if spec.config.get("os_pass"):
                c.set_password(vm.name, "root", spec.config["os_pass"])
        return vm_info(vm)

    @hookimpl
    def vm_power(self, host: HostSpec, vm_uuid: str, action: PowerAction) -> VMInfo:
        with backend_errors(f"{action.value} {vm_uuid}"):
            return vm_info(cloud(host).power(vm_uuid, POWER[action]))

    @hookimpl
    def vm_status(self, host: HostSpec, vm_uuid: str) -> VMInfo:
        with backend_errors(f"status of {vm_uuid}"):
            return vm_info(cloud(host).vm(vm_uuid))

    @hookimpl
    def vm_set_password(self, host: HostSpec, vm_uuid: str, username: str, password: str) -> None:
        with backend_errors(f"password of {vm_uuid}"):
            cloud(host).set_password(vm_uuid, username, password)

    # ------------------------------------------------------------------ consoles

    @hookimpl
    def vm_console(self, host: HostSpec, vm_uuid: str) -> ConsoleEndpoint:
        # Only say where the VM's VNC server is: the core serves the page and bridges to it.
        with backend_errors(f"console of {vm_uuid}"):
            port = cloud(host).console_port(vm_uuid)
        return ConsoleEndpoint(kind=ConsoleKind.VNC, address="127.0.0.1", port=port)

    @hookimpl
    def vm_terminal_open(self, host: HostSpec, vm_uuid: str, cols: int, rows: int) -> TerminalChannel:
        with backend_errors(f"terminal of {vm_uuid}"):
            terminal = cloud(host).open_terminal(vm_uuid)
        terminal.resize(cols, rows)
        return terminal

    # ------------------------------------------------------------------ network

    @hookimpl
    def vm_ip_list(self, host: HostSpec, vm_uuid: str) -> list[IPAddress]:
        with backend_errors(f"addresses of {vm_uuid}"):
            return [IPAddress(address=ip, version=4, nic="eth0") for ip in cloud(host).vm(vm_uuid).ips]

    @hookimpl
    def vm_traffic(self, host: HostSpec, vm_uuids: list[str]) -> dict[str, TrafficCounters]:
        with backend_errors("traffic counters"):
            return {name: TrafficCounters(rx_bytes=rx, tx_bytes=tx, epoch=f"boot-{boots}")
                    for name, (rx, tx, boots) in cloud(host).traffic(vm_uuids).items()}

    @hookimpl
    def vm_bandwidth(self, host: HostSpec, vm_uuid: str, up_mbit: int, down_mbit: int) -> None:
        with backend_errors(f"caps of {vm_uuid}"):
            cloud(host).set_caps(vm_uuid, up_mbit, down_mbit)

    @hookimpl
    def vm_ip_add(self, host: HostSpec, vm_uuid: str, request: dict[str, Any]) -> IPAddress:
        with backend_errors(f"add an address to {vm_uuid}"):
            return IPAddress(address=cloud(host).add_ip(vm_uuid), version=4, nic="eth0")

    @hookimpl
    def vm_ip_remove(self, host: HostSpec, vm_uuid: str, address: IPAddress) -> None:
        with backend_errors(f"remove an address of {vm_uuid}"):
            cloud(host).remove_ip(vm_uuid, address.address)

    @hookimpl
    def nat_add(self, host: HostSpec, vm_uuid: str, rule: NatRule) -> NatRule:
        c = cloud(host)
        with backend_errors(f"forward port {rule.host_port} to {vm_uuid}"):
            c.forward(rule.host_port, vm_uuid, rule.vm_port, rule.protocol)
            return NatRule(rule.host_port, rule.vm_port, rule.protocol, lan_addr=c.vm(vm_uuid).ips[0])

    @hookimpl
    def nat_remove(self, host: HostSpec, vm_uuid: str, rule: NatRule) -> None:
        cloud(host).unforward(rule.host_port, rule.protocol)

    @hookimpl
    def nat_sync(self, host: HostSpec, vm_uuid: str, rules: list[NatRule]) -> None:
        c = cloud(host)
        wanted = {(r.host_port, r.protocol): r for r in rules}
        with backend_errors(f"sync the forwards of {vm_uuid}"):
            for key, fwd in list(c.forwards.items()):
                if fwd.vm_name == vm_uuid and key not in wanted:
                    c.unforward(*key)
            for r in rules:
                c.forward(r.host_port, vm_uuid, r.vm_port, r.protocol)

    @hookimpl
    def proxy_add(self, host: HostSpec, vm_uuid: str, rule: ProxyRule) -> None:
        c = cloud(host)
        with backend_errors(f"proxy {rule.domain}"), c.lock:
            c.vm(vm_uuid).files[f"/etc/fakecloud/proxy/{rule.domain}"] = str(rule.lan_port)

    @hookimpl
    def proxy_remove(self, host: HostSpec, vm_uuid: str, rule: ProxyRule) -> None:
        c = cloud(host)
        with backend_errors(f"proxy {rule.domain}"), c.lock:
            c.vm(vm_uuid).files.pop(f"/etc/fakecloud/proxy/{rule.domain}", None)

    # ------------------------------------------------------------------ storage

    @hookimpl
    def disk_attach(self, host: HostSpec, vm_uuid: str, disk: DiskSpec) -> None:
        with backend_errors(f"attach {disk.name} to {vm_uuid}"):
            cloud(host).attach_disk(vm_uuid, disk.name, disk.size_gb)

    @hookimpl
    def disk_detach(self, host: HostSpec, vm_uuid: str, disk_name: str) -> None:
        with backend_errors(f"detach {disk_name} from {vm_uuid}"):
            cloud(host).detach_disk(vm_uuid, disk_name)

    @hookimpl
    def disk_delete(self, host: HostSpec, vm_uuid: str, disk_name: str) -> None:
        with backend_errors(f"delete {disk_name} of {vm_uuid}"):
            cloud(host).delete_disk(vm_uuid, disk_name)

    @hookimpl
    def iso_mount(self, host: HostSpec, vm_uuid: str, iso_name: str) -> None:
        with backend_errors(f"insert {iso_name} into {vm_uuid}"):
            cloud(host).insert_iso(vm_uuid, iso_name)

    @hookimpl
    def iso_unmount(self, host: HostSpec, vm_uuid: str, iso_name: str) -> None:
        with backend_errors(f"eject {iso_name} from {vm_uuid}"):
            cloud(host).insert_iso(vm_uuid, None)

    # ------------------------------------------------------------------ backups

    @hookimpl
    def backup_create(self, host: HostSpec, vm_uuid: str, backup_name: str, description: str,
                      progress: Progress) -> BackupInfo:
        progress(10, f"copying {vm_uuid}")
        with backend_errors(f"back up {vm_uuid}"):
            size = cloud(host).backup(vm_uuid, backup_name, description)
        return BackupInfo(backup_name=backup_name, vm_uuid=vm_uuid, description=description, size_bytes=size)

    @hookimpl
    def backup_restore(self, host: HostSpec, vm_uuid: str, backup_name: str, progress: Progress) -> VMInfo:
        progress(10, f"restoring {backup_name}")
        with backend_errors(f"restore {backup_name} of {vm_uuid}"):
            return vm_info(cloud(host).restore(vm_uuid, backup_name))

    @hookimpl
    def backup_delete(self, host: HostSpec, vm_uuid: str, backup_name: str) -> None:
        cloud(host).delete_backup(vm_uuid, backup_name)

    @hookimpl
    def backup_list(self, host: HostSpec) -> list[BackupInfo]:
        c = cloud(host)
        with c.lock:
            return [BackupInfo(backup_name=name, vm_uuid=vm, description=desc)
                    for (vm, name), (desc, _copy) in c.backups.items()]


def _status(c: fakecloud.FakeCloud) -> HostStatus:
    with c.lock:
        running = sum(vm.state == "running" for vm in c.vms.values())
        return HostStatus(online=True, cpu_usage=float(running), memory_usage=10.0 + running,
                          disk_usage=20.0, vms_count=len(c.vms), version="FakeCloud 1.0")
