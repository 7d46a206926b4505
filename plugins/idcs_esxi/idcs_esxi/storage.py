"""The datastore new VMs and disks go to, extra virtual disks (``[ds] <vm folder>/idcs-disk-<name>.vmdk``)
and the CD-ROM's ISO."""

from __future__ import annotations

from typing import Any

from pyVmomi import vim

from idcs_core import errors
from idcs_core.types import DiskSpec, Progress
from idcs_esxi import devices, images, naming, tasks
from idcs_esxi.client import Connection
from idcs_esxi.props import read_one, read_view


def datastore(conn: Connection) -> vim.Datastore:
    """The datastore the option names, else the accessible one with most free space."""
    rows = read_view(conn, conn.ds_view, vim.Datastore, ["name", "summary.freeSpace", "summary.accessible"])
    wanted = conn.options.datastore
    if wanted:
        for row in rows:
            if row.get("name") == wanted:
                return row.obj
        names = ", ".join(sorted(str(r.get("name")) for r in rows))
        raise errors.BadRequest(f"host option datastore: no datastore {wanted!r} (there are: {names})")
    usable = [r for r in rows if r.get("summary.accessible", True)]
    if not usable:
        raise errors.VMOperationFailed(f"host {conn.host.name} has no accessible datastore")
    return max(usable, key=lambda r: int(r.get("summary.freeSpace") or 0)).obj


def _hardware(conn: Connection, vm: vim.VirtualMachine) -> tuple[list[Any], str]:
    row = read_one(conn, vm, vim.VirtualMachine, ["config.hardware.device", "config.files.vmPathName"])
    return list(row.get("config.hardware.device") or []), str(row.get("config.files.vmPathName") or "")


def disk_path(vmx_path: str, name: str) -> str:
    """Where the extra disk ``name`` lives: beside the VM's .vmx file."""
    folder = vmx_path.rsplit("/", 1)[0] if "/" in vmx_path else vmx_path.split("]")[0] + "]"
    sep = "/" if not folder.endswith("]") else " "
    return f"{folder}{sep}{devices.EXTRA_DISK_PREFIX}{name}.vmdk"


def _attached(devs: list[Any], name: str) -> Any | None:
    return next((d for d in devices.disks(devs) if devices.extra_disk_name(d) == name), None)


def _exists(conn: Connection, path: str) -> bool:
    """Whether the datastore has the file (a detached disk), in one search task."""
    parsed = images.datastore_path(path)
    if parsed is None:
        return False
    ds_name, rel = parsed
    folder, _, base = rel.rpartition("/")
    rows = read_view(conn, conn.ds_view, vim.Datastore, ["name", "browser"])
    browser = next((r.get("browser") for r in rows if r.get("name") == ds_name), None)
    if browser is None:
        return False
    spec = vim.host.DatastoreBrowser.SearchSpec(matchPattern=[base])
    try:
        result = tasks.wait(conn, browser.SearchDatastore_Task(datastorePath=f"[{ds_name}] {folder}",
                                                                     searchSpec=spec), f"looking for {base}")
    except vim.fault.FileNotFound:
        return False
    return any(f.path == base for f in (result.file or [])) if result is not None else False


def _reconfigure(conn: Connection, vm: vim.VirtualMachine, changes: list[Any], what: str,
                 progress: Progress | None) -> None:
    task = vm.ReconfigVM_Task(spec=vim.vm.ConfigSpec(deviceChange=changes))
    tasks.wait(conn, task, what, progress, 10, 100)


def disk_attach(conn: Connection, vm_uuid: str, ref: str | None, disk: DiskSpec, progress: Progress) -> None:
    """Create the thin disk if it does not exist, and attach it; attached already is fine."""
    vm = naming.resolve(conn, vm_uuid, ref)
    devs, vmx = _hardware(conn, vm)
    if _attached(devs, disk.name) is not None:
        progress(100, f"disk {disk.name} is attached")
        return
    path = disk_path(vmx, disk.name)
    changes: list[Any] = []
    ctrl = devices.scsi_controller(devs)
    if ctrl is None:
        changes.append(devices.new_controller(-100))
        ctrl_key, unit = -100, 0
    else:
        ctrl_key, unit = ctrl.key, devices.free_unit(devs, ctrl.key)
    create = not _exists(conn, path)
    changes.append(devices.new_disk(ctrl_key, unit, disk.size_gb, path, create=create))
    verb = "creating and attaching" if create else "attaching"
    _reconfigure(conn, vm, changes, f"{verb} disk {disk.name}", progress)


def disk_detach(conn: Connection, vm_uuid: str, ref: str | None, disk_name: str, progress: Progress) -> None:
    """Detach the disk and keep its file for a later attach."""
    vm = naming.resolve(conn, vm_uuid, ref)
    devs, _vmx = _hardware(conn, vm)
    attached = _attached(devs, disk_name)
    if attached is not None:
        _reconfigure(conn, vm, [devices.remove(attached)], f"detaching disk {disk_name}", progress)


def disk_delete(conn: Connection, vm_uuid: str, ref: str | None, disk_name: str, progress: Progress) -> None:
    """Detach the disk if needed and destroy its file; a disk already gone is fine."""
    vm = naming.resolve(conn, vm_uuid, ref)
    devs, vmx = _hardware(conn, vm)
    attached = _attached(devs, disk_name)
    if attached is not None:
        _reconfigure(conn, vm, [devices.remove(attached, destroy=True)], f"deleting disk {disk_name}", progress)
        return
    path = disk_path(vmx, disk_name)
    if _exists(conn, path):
        manager = conn.content.virtualDiskManager
        if manager is None:
            raise errors.NotSupported("this server has no virtual disk manager: delete the disk file by hand")
        task = manager.DeleteVirtualDisk_Task(name=path, datacenter=conn.datacenter)
        tasks.wait(conn, task, f"deleting disk {disk_name}", progress, 10, 100)


def iso_mount(conn: Connection, vm_uuid: str, ref: str | None, iso_name: str) -> None:
    """Insert the datastore ISO into the VM's first CD-ROM (adding one if it has none)."""
    vm = naming.resolve(conn, vm_uuid, ref)
    path = images.resolve_iso(conn, iso_name)
    devs, _vmx = _hardware(conn, vm)
    drives = devices.cdroms(devs)
    if drives:
        change = devices.load_iso(drives[0], path)
    else:
        ide = next((d for d in devs if isinstance(d, vim.vm.device.VirtualIDEController) and len(d.device or []) < 2),
                   None)
        if ide is None:
            raise errors.VMOperationFailed(f"{vm_uuid} has no CD-ROM and no free IDE slot for one")
        change = devices.new_cdrom(ide.key, path)
        change.device.unitNumber = len(ide.device or [])
    _reconfigure(conn, vm, [change], f"mounting {path}", None)


def iso_unmount(conn: Connection, vm_uuid: str, ref: str | None, iso_name: str) -> None:
    """Eject the ISO if it is in a CD-ROM of the VM; not loaded is fine."""
    vm = naming.resolve(conn, vm_uuid, ref)
    parsed = images.datastore_path(iso_name)
    wanted = f"[{parsed[0]}] {parsed[1]}" if parsed else iso_name
    devs, _vmx = _hardware(conn, vm)
    changes = [devices.load_iso(c, None) for c in devices.cdroms(devs)
               if isinstance(c.backing, vim.vm.device.VirtualCdrom.IsoBackingInfo)
               and str(c.backing.fileName) in (wanted, iso_name)]
    if changes:
        _reconfigure(conn, vm, changes, f"ejecting {wanted}", None)
