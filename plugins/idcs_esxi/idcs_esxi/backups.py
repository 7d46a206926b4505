"""Backups are snapshots named by the core: create (with description), revert, delete, list."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pyVmomi import vim

from idcs_core import errors
from idcs_core.types import BackupInfo, Progress, VMInfo
from idcs_esxi import lifecycle, naming, tasks
from idcs_esxi.client import Connection
from idcs_esxi.props import read_one, read_view


def _walk(trees: Any) -> Iterator[Any]:
    for tree in trees or []:
        yield tree
        yield from _walk(tree.childSnapshotList)


def _info(vm_uuid: str, tree: Any) -> BackupInfo:
    created = tree.createTime.isoformat() if tree.createTime else None
    return BackupInfo(backup_name=str(tree.name), vm_uuid=vm_uuid, description=str(tree.description or ""),
                      created_at=created)


def _snapshots(conn: Connection, vm: vim.VirtualMachine) -> list[Any]:
    return list(_walk(read_one(conn, vm, vim.VirtualMachine, ["snapshot.rootSnapshotList"])
                      .get("snapshot.rootSnapshotList")))


def _find(conn: Connection, vm: vim.VirtualMachine, name: str) -> Any | None:
    return next((t for t in _snapshots(conn, vm) if t.name == name), None)


def backup_create(conn: Connection, vm_uuid: str, ref: str | None, name: str, description: str,
                  progress: Progress) -> BackupInfo:
    """Snapshot the VM's disks (no memory, no quiescing) under ``name``."""
    vm = naming.resolve(conn, vm_uuid, ref)
    if _find(conn, vm, name) is not None:
        raise errors.Conflict(f"{vm_uuid} already has a snapshot named {name!r}")
    task = vm.CreateSnapshot_Task(name=name, description=description, memory=False, quiesce=False)
    tasks.wait(conn, task, f"snapshot {name}", progress, 5, 95)
    made = _find(conn, vm, name)
    if made is None:
        raise errors.VMOperationFailed(f"the snapshot {name!r} of {vm_uuid} did not appear")
    return _info(vm_uuid, made)


def backup_restore(conn: Connection, vm_uuid: str, ref: str | None, name: str, progress: Progress) -> VMInfo:
    """Revert to the snapshot; a VM that was running is started again afterwards."""
    vm = naming.resolve(conn, vm_uuid, ref)
    snap = _find(conn, vm, name)
    if snap is None:
        raise errors.NotFound(f"{vm_uuid} has no backup {name!r}")
    was_on = lifecycle.power_state(conn, vm) == lifecycle.On
    tasks.wait(conn, snap.snapshot.RevertToSnapshot_Task(), f"reverting to {name}", progress, 5, 80)
    if was_on and lifecycle.power_state(conn, vm) != lifecycle.On:
        tasks.wait(conn, vm.PowerOnVM_Task(), f"starting {vm_uuid}", progress, 80, 99)
    return lifecycle.to_info(lifecycle.vm_row(conn, vm))


def backup_delete(conn: Connection, vm_uuid: str, ref: str | None, name: str) -> None:
    """Remove the snapshot (its children stay); one already gone is fine."""
    vm = naming.find_vm(conn, vm_uuid, ref)
    if vm is None:
        return
    snap = _find(conn, vm, name)
    if snap is not None:
        tasks.wait(conn, snap.snapshot.RemoveSnapshot_Task(removeChildren=False), f"deleting snapshot {name}")


def backup_list(conn: Connection) -> list[BackupInfo]:
    """Every snapshot of every VM of the scope, in one property read."""
    found: list[BackupInfo] = []
    for row in read_view(conn, conn.vm_view, vim.VirtualMachine,
                         ["name", "config.template", "snapshot.rootSnapshotList"]):
        if row.get("config.template") or not row.get("name"):
            continue
        found.extend(_info(str(row.get("name")), t) for t in _walk(row.get("snapshot.rootSnapshotList")))
    return found
