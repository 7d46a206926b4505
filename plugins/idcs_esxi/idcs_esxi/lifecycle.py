"""VM life cycle: list, status, create (clone a template or boot an ISO), update, delete, power."""

from __future__ import annotations

import time
from typing import Any

from pyVmomi import vim

from idcs_core import errors
from idcs_core.types import ImageKind, PowerAction, Progress, VMInfo, VMSpec, VMStatus
from idcs_esxi import devices, images, naming, network, storage, tasks
from idcs_esxi.client import Connection
from idcs_esxi.console import vnc_settings
from idcs_esxi.props import Row, option_dict, read_one, read_view

OS_KEY = "idcs.os_name"
HDD_KEY = "idcs.hdd_gb"  # the system disk's size as this engine last set it (lists skip the device list)
VM_PATHS = [
    "name", "config.instanceUuid", "config.template", "runtime.powerState", "config.hardware.numCPU",
    "config.hardware.memoryMB", "config.hardware.device", "config.extraConfig", "guest.net",
    "guest.ipAddress", "summary.quickStats.overallCpuUsage", "summary.quickStats.guestMemoryUsage",
    "runtime.maxCpuUsage",
]
# A list leaves out the device list: it is most of the bytes (about 4x the time for 500 VMs);
# the system disk's size then comes from HDD_KEY, unknown (None) for VMs made elsewhere.
LIST_PATHS = [p for p in VM_PATHS if p != "config.hardware.device"]
_STATUS = {"poweredOn": VMStatus.RUNNING, "poweredOff": VMStatus.STOPPED, "suspended": VMStatus.PAUSED}
On = vim.VirtualMachine.PowerState.poweredOn
Off = vim.VirtualMachine.PowerState.poweredOff
Suspended = vim.VirtualMachine.PowerState.suspended


extra_config = option_dict


def addresses(net: Any, fallback: Any = None) -> list[str]:
    """The guest's IP addresses as VMware Tools reports them (``guest.net``)."""
    found: list[str] = []
    for nic in net or []:
        for ip in nic.ipAddress or []:
            if ip and ip not in found:
                found.append(str(ip))
    if not found and fallback:
        found.append(str(fallback))
    return found


def _percent(used: Any, total: Any) -> float | None:
    if not used or not total:
        return 0.0 if total else None
    return round(min(100.0, 100.0 * float(used) / float(total)), 1)


def to_info(row: Row) -> VMInfo:
    """A ``VMInfo`` from a row read with ``VM_PATHS`` (or ``LIST_PATHS``: no disks, no ISOs)."""
    state = str(row.get("runtime.powerState") or "")
    settings = extra_config(row.get("config.extraConfig"))
    extra: dict[str, Any] = {"moref": row.obj._moId}
    hdd: int | None = int(settings[HDD_KEY]) if settings.get(HDD_KEY, "").isdigit() else None
    if "config.hardware.device" in row.props:
        devs = row.get("config.hardware.device") or []
        system = devices.system_disk(devs)
        hdd = devices.size_gb(system) if system is not None else None
        extra["disks"] = {n: devices.size_gb(d) for d in devices.disks(devs) if (n := devices.extra_disk_name(d))}
        extra["isos"] = devices.mounted_isos(devs)
    memory = row.get("config.hardware.memoryMB")
    return VMInfo(
        vm_uuid=str(row.get("name")),
        status=_STATUS.get(state, VMStatus.STOPPED),
        power_state=state or "unknown",
        vm_name=str(row.get("name")),
        os_name=settings.get(OS_KEY),
        cpu_num=row.get("config.hardware.numCPU"),
        ram_num=int(memory) if memory is not None else None,
        hdd_num=hdd,
        cpu_usage=_percent(row.get("summary.quickStats.overallCpuUsage"), row.get("runtime.maxCpuUsage")),
        memory_usage=_percent(row.get("summary.quickStats.guestMemoryUsage"), memory),
        ip_addresses=addresses(row.get("guest.net"), row.get("guest.ipAddress")),
        extra=extra,
        ref=row.get("config.instanceUuid"),
    )


def vm_list(conn: Connection) -> list[VMInfo]:
    """Every VM of the scope (templates excluded), in one property read."""
    rows = read_view(conn, conn.vm_view, vim.VirtualMachine, LIST_PATHS)
    idx = naming.VMIndex()
    infos: list[VMInfo] = []
    for row in rows:
        name = row.get("name")
        if not name:
            continue
        idx.add(name, row.get("config.instanceUuid"), row.obj, bool(row.get("config.template")))
        if not row.get("config.template"):
            infos.append(to_info(row))
    with conn.lock:
        conn.index["vms"] = idx  # a full read refreshes the index for free
    return infos


def vm_row(conn: Connection, vm: vim.VirtualMachine) -> Row:
    return Row(vm, read_one(conn, vm, vim.VirtualMachine, VM_PATHS))


def vm_status(conn: Connection, vm_uuid: str, ref: str | None) -> VMInfo:
    return to_info(vm_row(conn, naming.resolve(conn, vm_uuid, ref)))


def power_state(conn: Connection, vm: vim.VirtualMachine) -> str:
    return str(read_one(conn, vm, vim.VirtualMachine, ["runtime.powerState"]).get("runtime.powerState"))


# ------------------------------------------------------------------ create


def _base_config(conn: Connection, spec: VMSpec) -> vim.vm.ConfigSpec:
    extra = [vim.option.OptionValue(key=OS_KEY, value=spec.os_name), *vnc_settings(conn, spec.vm_uuid)]
    return vim.vm.ConfigSpec(numCPUs=spec.cpu_num, memoryMB=spec.ram_num, extraConfig=extra)


def _clone(conn: Connection, spec: VMSpec, template: Any, datastore: Any, progress: Progress) -> Any:
    relocate = vim.vm.RelocateSpec(pool=conn.pool, datastore=datastore)
    if conn.options.network:  # the template's first NIC goes to the port group the host names
        first = devices.nics(read_one(conn, template, vim.VirtualMachine, ["config.hardware.device"])
                             .get("config.hardware.device") or [])
        if first:
            relocate.deviceChange = [devices.move_nic(first[0], network.port_group(conn))]
    clone = vim.vm.CloneSpec(location=relocate, powerOn=False, template=False, config=_base_config(conn, spec))
    task = template.CloneVM_Task(folder=conn.datacenter.vmFolder, name=spec.vm_uuid, spec=clone)
    return tasks.wait(conn, task, f"cloning {spec.os_name}", progress, 5, 60)


def _from_iso(conn: Connection, spec: VMSpec, iso: str, datastore: Any, progress: Progress) -> Any:
    config = _base_config(conn, spec)
    config.name = spec.vm_uuid
    config.guestId = images.guest_id_for(spec.os_name)
    config.files = vim.vm.FileInfo(vmPathName=f"[{datastore.name}]")
    config.deviceChange = [
        devices.new_controller(-100),
        devices.new_disk(-100, 0, spec.hdd_num, f"[{datastore.name}]"),
        devices.new_cdrom(200, iso),  # the first IDE controller every VM has
        devices.new_nic(network.port_group(conn)),
    ]
    task = conn.datacenter.vmFolder.CreateVM_Task(config=config, pool=conn.pool)
    return tasks.wait(conn, task, f"creating {spec.vm_uuid}", progress, 5, 60)


def _fit(conn: Connection, vm: vim.VirtualMachine, spec: VMSpec, progress: Progress, start: int, end: int) -> None:
    """Make CPU, memory and the system disk what ``spec`` says (the disk only grows)."""
    row = read_one(conn, vm, vim.VirtualMachine, ["config.hardware.numCPU", "config.hardware.memoryMB",
                                                 "config.hardware.device", "config.extraConfig"])
    config: Any = vim.vm.ConfigSpec()  # the stubs type its fields None until set
    changed = False
    if row.get("config.hardware.numCPU") != spec.cpu_num:
        config.numCPUs, changed = spec.cpu_num, True
    if row.get("config.hardware.memoryMB") != spec.ram_num:
        config.memoryMB, changed = spec.ram_num, True
    system = devices.system_disk(row.get("config.hardware.device") or [])
    if system is not None and spec.hdd_num:
        current = devices.size_gb(system)
        if spec.hdd_num < current:
            raise errors.BadRequest(f"the system disk is {current} GB: it cannot shrink to {spec.hdd_num} GB")
        if spec.hdd_num > current:
            config.deviceChange, changed = [devices.grow_disk(system, spec.hdd_num)], True
        if extra_config(row.get("config.extraConfig")).get(HDD_KEY) != str(max(current, spec.hdd_num)):
            config.extraConfig = [vim.option.OptionValue(key=HDD_KEY, value=str(max(current, spec.hdd_num)))]
            changed = True
    if changed:
        tasks.wait(conn, vm.ReconfigVM_Task(spec=config), f"reconfiguring {spec.vm_uuid}", progress, start, end)


def vm_create(conn: Connection, spec: VMSpec, progress: Progress) -> VMInfo:
    """Clone the template (or boot the ISO) named by ``spec.os_name``, size it and start it."""
    if naming.find_vm(conn, spec.vm_uuid) is not None:
        raise errors.Conflict(f"host {conn.host.name} already has a VM named {spec.vm_uuid!r}")
    source = images.resolve_source(conn, spec.os_name)
    datastore = storage.datastore(conn)
    progress(5, f"placing {spec.vm_uuid} on {datastore.name}")
    if source.kind == ImageKind.TEMPLATE:
        vm = _clone(conn, spec, source.template, datastore, progress)
    else:
        vm = _from_iso(conn, spec, source.iso_path, datastore, progress)
    try:
        _fit(conn, vm, spec, progress, 60, 80)
        tasks.wait(conn, vm.PowerOnVM_Task(), f"starting {spec.vm_uuid}", progress, 80, 99)
    except BaseException:
        _destroy(conn, vm, spec.vm_uuid, tasks.no_progress)  # leave the host as it was
        raise
    row = vm_row(conn, vm)
    naming.remember(conn, spec.vm_uuid, row.get("config.instanceUuid"), vm)
    return to_info(row)


def vm_update(conn: Connection, spec: VMSpec, progress: Progress) -> VMInfo:
    """Apply CPU, memory and a larger system disk."""
    vm = naming.resolve(conn, spec.vm_uuid, spec.ref)
    _fit(conn, vm, spec, progress, 10, 95)
    return to_info(vm_row(conn, vm))


def _destroy(conn: Connection, vm: vim.VirtualMachine, vm_uuid: str, progress: Progress) -> None:
    if power_state(conn, vm) != Off:
        tasks.wait(conn, vm.PowerOffVM_Task(), f"powering off {vm_uuid}", progress, 5, 40)
    tasks.wait(conn, vm.Destroy_Task(), f"deleting {vm_uuid}", progress, 40, 100)


def vm_delete(conn: Connection, vm_uuid: str, ref: str | None, progress: Progress) -> None:
    """Power off and destroy the VM with its disks; a VM already gone is fine."""
    vm = naming.find_vm(conn, vm_uuid, ref)
    if vm is None:
        return
    try:
        _destroy(conn, vm, vm_uuid, progress)
    finally:
        naming.forget(conn, vm_uuid)


# ------------------------------------------------------------------ power


def _wait_state(conn: Connection, vm: vim.VirtualMachine, wanted: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if power_state(conn, vm) == wanted:
            return True
        time.sleep(0.5)
    return False


def vm_power(conn: Connection, vm_uuid: str, ref: str | None, action: PowerAction) -> VMInfo:
    """Apply ``action``; starting a running VM or stopping a stopped one changes nothing."""
    vm = naming.resolve(conn, vm_uuid, ref)
    state = power_state(conn, vm)
    what = f"{action.value} on {vm_uuid}"
    if action in (PowerAction.START, PowerAction.RESUME):
        if state != On:
            tasks.wait(conn, vm.PowerOnVM_Task(), what)
    elif action == PowerAction.HARD_OFF:
        if state != Off:
            tasks.wait(conn, vm.PowerOffVM_Task(), what)
    elif action == PowerAction.STOP:
        if state == Suspended:
            tasks.wait(conn, vm.PowerOffVM_Task(), what)
        elif state == On:
            try:
                vm.ShutdownGuest()
                graceful = _wait_state(conn, vm, Off, 60)
            except vim.fault.ToolsUnavailable:
                graceful = False
            if not graceful:  # no tools, or the guest ignored the request: power off
                tasks.wait(conn, vm.PowerOffVM_Task(), what)
    elif action == PowerAction.RESET:
        if state == On:
            tasks.wait(conn, vm.ResetVM_Task(), what)
        else:
            tasks.wait(conn, vm.PowerOnVM_Task(), what)
    elif action == PowerAction.PAUSE:
        if state == Off:
            raise errors.VMOperationFailed(f"{vm_uuid} is powered off: it cannot be suspended")
        if state != Suspended:
            tasks.wait(conn, vm.SuspendVM_Task(), what)
    else:
        raise errors.NotSupported(f"power action {action} is not supported")
    return to_info(vm_row(conn, vm))
