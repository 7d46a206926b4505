"""Extra disks of a VM (ISO images: ``iso_mounts``).

Attaching, detaching and deleting a disk are tasks (kinds ``disk_add``, ``disk_remove``,
``disk_delete``): recorded with the change they make, run at once (the request answers when the
task ends, as the API contract says), each with its recovery rule next to its handler. The
engine's progress (e.g. "the container is recreated to attach disk data") is the task's, and its
first word (the announcement) stays in the task's final message."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from idcs_core import errors
from idcs_core.db.models import VM, Disk, Task
from idcs_core.services import limits, quotas
from idcs_core.services.audit import recorded
from idcs_core.services.late_hooks import settle_late
from idcs_core.services.lookup import get_vm
from idcs_core.tasks import NotedProgress, answer_of, task_handler, task_recovery
from idcs_core.types import DiskSpec, VMStatus

if TYPE_CHECKING:
    from idcs_core.context import CoreContext
    from idcs_core.services.auth import Principal
    from idcs_core.tasks import TaskProgress


def disk_dict(d: Disk) -> dict[str, Any]:
    return {"hdd_name": d.name, "hdd_size": d.size_gb, "mounted": d.mounted}


async def _pick_disk(s: Any, vm_id: int, name: str | None) -> Disk:
    """The disk named ``name``, or the VM's only extra disk when no name is given."""
    disks = list((await s.execute(select(Disk).where(Disk.vm_id == vm_id))).scalars())
    if name:
        for disk in disks:
            if disk.name == name:
                return disk
        raise errors.NotFound(f"disk {name} does not exist on this VM")
    if len(disks) == 1:
        return disks[0]
    raise errors.BadRequest("hdd_name is required" if disks else "this VM has no extra disk")


async def mount_disk(core: CoreContext, principal: Principal, hs_name: str, vm_uuid: str,
                     name: str, size_gb: int) -> dict[str, Any]:
    """Create (charging ``size_gb`` to the quota) and attach, or re-attach a detached disk.

    The attach is a task of kind ``disk_add``, recorded with the disk's row and run at once
    (the call answers when it ends), so a crash half-way is settled at the next start."""
    async with recorded(core, principal, "disk.mount", f"{hs_name}/{vm_uuid}", name):
        limits.check_disk_size(core, size_gb)
        async with core.db.session() as s:
            vm = await get_vm(s, principal, hs_name, vm_uuid)
            core.require(vm.host, "disk_attach", "extra disks")
            _check_idle(vm)
            disk = (await s.execute(select(Disk).where(Disk.vm_id == vm.id, Disk.name == name))).scalar_one_or_none()
            created = disk is None
            if disk is None:
                await quotas.charge(s, vm.owner_id, hdd=size_gb)
                disk = Disk(vm_id=vm.id, name=name, size_gb=size_gb, mounted=False)
                s.add(disk)
                await s.flush()
            elif disk.mounted:
                return disk_dict(disk)
            task = core.tasks.add(s, "disk_add", host_name=hs_name, vm_uuid=vm_uuid, user_id=principal.user_id,
                                  params={"disk_id": disk.id, "created": created})
        return _answer(await core.tasks.run(task.id))


def _check_idle(vm: VM) -> None:
    if vm.status in (VMStatus.CREATING, VMStatus.DELETING):
        raise errors.Conflict(f"virtual machine {vm.vm_uuid} is busy ({vm.status}); try again when it is done")


def _answer(result: dict[str, Any]) -> dict[str, Any]:
    return answer_of(result)


async def _disk_target(core: CoreContext, task: Task) -> tuple[Disk, VM] | None:
    """The task's disk and its VM, or None when the disk's record is gone."""
    async with core.db.session() as s:
        disk = await s.get(Disk, task.params["disk_id"])
        if disk is None:
            return None
        vm = await s.get(VM, disk.vm_id)
        assert vm is not None  # a disk's row goes with its VM's (and the VM's host is loaded with it)
        return disk, vm


async def _forget_disk(core: CoreContext, disk_id: int, owner_id: int | None) -> None:
    """Drop the disk's record and give its size back to the owner's quota."""
    async with core.db.session() as s:
        row = await s.get(Disk, disk_id)
        if row is not None:
            await s.delete(row)
            await quotas.charge(s, owner_id, hdd=-row.size_gb)


async def _set_mounted(core: CoreContext, disk_id: int, mounted: bool) -> dict[str, Any]:
    async with core.db.session() as s:
        row = await s.get(Disk, disk_id)
        if row is None:
            raise errors.NotFound("the disk was removed while it was being changed")
        row.mounted = mounted
        return disk_dict(row)


@task_handler("disk_add")
async def _run_disk_add(core: CoreContext, task: Task, progress: TaskProgress) -> dict[str, Any]:
    """Attach the disk on the host; if the engine fails, a disk this task created is forgotten
    (record and quota) and a re-attached one stays detached."""
    target = await _disk_target(core, task)
    if target is None:
        raise errors.NotFound("the disk was removed before it was attached")
    disk, vm = target
    noted = NotedProgress(progress)
    created = bool(task.params.get("created"))
    try:
        await core.engines.disk_attach(vm, DiskSpec(disk.name, disk.size_gb), noted)
    except errors.IDCSError as exc:
        if created:
            await _forget_disk(core, disk.id, vm.owner_id)
        settle_late(core, exc, f"disk {disk.name} attached to {vm.host.server_name}/{vm.vm_uuid}",
                    lambda _late: _settle_late_attach(core, vm, disk.id, disk.name, created))
        raise
    return await _set_mounted(core, disk.id, True) | {"message": noted.final(f"disk {disk.name} attached")}


async def _settle_late_attach(core: CoreContext, vm: VM, disk_id: int, name: str, created: bool) -> None:
    """An attach that ended after its task had failed: a disk the task created (its record and quota
    already given back) is deleted from the host, unless a disk of that name was recorded again
    since; a re-attached disk whose record is still there is recorded as mounted, as it is."""
    async with core.db.session() as s:
        again = (await s.execute(select(Disk.id).where(Disk.vm_id == vm.id, Disk.name == name))).first()
    if created and again is None:
        await core.engines.disk_delete(vm, name, lambda _p, _m="": None)
    elif not created and again is not None:
        await _set_mounted(core, disk_id, True)


# Recovery rule of an interrupted attach: the user asked for the disk, and attaching is idempotent,
# so the attach is finished and the task succeeds (a retry by a billing module then finds it mounted).
# If the VM is gone, a disk this task created is forgotten with its quota and the task fails saying so;
# if the engine refuses, the disk is taken off again (disk_delete for one this task created, which is
# then forgotten; disk_detach for a re-attach) and the task fails with the engine's reason.
@task_recovery("disk_add")
async def _recover_disk_add(core: CoreContext, task: Task, progress: TaskProgress) -> dict[str, Any]:
    target = await _disk_target(core, task)
    if target is None:
        raise errors.NotFound("the server stopped while this disk was being attached, and its record is gone")
    disk, vm = target
    created = bool(task.params.get("created"))
    try:
        await core.engines.disk_attach(vm, DiskSpec(disk.name, disk.size_gb), progress)
    except errors.HostUnreachable:
        raise  # tried again once the host answers
    except errors.VMNotFound:
        if created:
            await _forget_disk(core, disk.id, vm.owner_id)
        raise errors.VMOperationFailed(f"the server stopped while disk {disk.name} was being attached, and "
                                       "the VM is gone") from None
    except errors.IDCSError as exc:
        undo_hook = core.engines.disk_delete if created else core.engines.disk_detach
        try:
            await undo_hook(vm, disk.name, progress)
        except errors.IDCSError as undo:
            raise errors.VMOperationFailed(f"the server stopped while disk {disk.name} was being attached; "
                                           f"finishing failed ({exc.msg}) and so did taking it off ({undo.msg}): "
                                           "the record is kept; delete the disk if unwanted") from exc
        if created:
            await _forget_disk(core, disk.id, vm.owner_id)
        else:
            await _set_mounted(core, disk.id, False)
        raise errors.VMOperationFailed(f"the server stopped while disk {disk.name} was being attached, and "
                                       f"finishing it failed ({exc.msg}): it was taken off again") from exc
    return await _set_mounted(core, disk.id, True) | {"message": f"disk {disk.name} attached"}


async def unmount_disk(core: CoreContext, principal: Principal, hs_name: str, vm_uuid: str,
                       name: str | None) -> dict[str, Any]:
    """Detach the disk, keeping its data: a task of kind ``disk_remove``, run at once."""
    async with recorded(core, principal, "disk.unmount", f"{hs_name}/{vm_uuid}", name or "") as done:
        task_id, done.detail = await _add_disk_task(core, principal, hs_name, vm_uuid, name, "disk_remove",
                                                    "disk_detach")
        return _answer(await core.tasks.run(task_id))


async def _add_disk_task(core: CoreContext, principal: Principal, hs_name: str, vm_uuid: str, name: str | None,
                         kind: str, hook: str) -> tuple[str, str]:
    """Record a task of ``kind`` on the VM's disk ``name`` (the only one when None), whose engine
    needs ``hook``; returns the task's id and the disk's name."""
    async with core.db.session() as s:
        vm = await get_vm(s, principal, hs_name, vm_uuid)
        core.require(vm.host, hook, "extra disks")
        _check_idle(vm)
        disk = await _pick_disk(s, vm.id, name)
        task = core.tasks.add(s, kind, host_name=hs_name, vm_uuid=vm_uuid, user_id=principal.user_id,
                              params={"disk_id": disk.id})
    return task.id, disk.name


@task_handler("disk_remove")
async def _run_disk_remove(core: CoreContext, task: Task, progress: TaskProgress) -> dict[str, Any]:
    target = await _disk_target(core, task)
    if target is None:
        raise errors.NotFound("the disk was removed before it was detached")
    disk, vm = target
    noted = NotedProgress(progress)
    try:
        await core.engines.disk_detach(vm, disk.name, noted)
    except errors.IDCSError as exc:  # a detach that ends late has done what was asked: record it then
        disk_id = disk.id
        settle_late(core, exc, f"disk {disk.name} detached from {vm.host.server_name}/{vm.vm_uuid}",
                    lambda _late: _set_mounted(core, disk_id, False))
        raise
    return await _set_mounted(core, disk.id, False) | {"message": noted.final(f"disk {disk.name} detached")}


# Recovery rule of an interrupted detach: the user asked for it and detaching is idempotent, so the
# detach is finished (its data kept) and the task succeeds; a VM that is gone has nothing attached,
# so the disk is recorded as detached.
@task_recovery("disk_remove")
async def _recover_disk_remove(core: CoreContext, task: Task, progress: TaskProgress) -> dict[str, Any]:
    try:
        return await _run_disk_remove(core, task, progress)
    except errors.VMNotFound:
        result = await _set_mounted(core, task.params["disk_id"], False)
        return result | {"message": "the VM is gone: the disk is recorded as detached"}


async def delete_disk(core: CoreContext, principal: Principal, hs_name: str, vm_uuid: str,
                      name: str | None) -> None:
    """Destroy the disk and its data, then its record: a task of kind ``disk_delete``, run at once."""
    async with recorded(core, principal, "disk.delete", f"{hs_name}/{vm_uuid}", name or ""):
        task_id, _name = await _add_disk_task(core, principal, hs_name, vm_uuid, name, "disk_delete", "disk_delete")
        await core.tasks.run(task_id)


@task_handler("disk_delete")
async def _run_disk_delete(core: CoreContext, task: Task, progress: TaskProgress) -> dict[str, Any]:
    target = await _disk_target(core, task)
    if target is None:
        return {"message": "the disk was already gone"}
    disk, vm = target
    noted = NotedProgress(progress)
    try:
        await core.engines.disk_delete(vm, disk.name, noted)
    except errors.IDCSError as exc:  # a deletion that ends late has destroyed the disk: forget it then
        disk_id, owner = disk.id, vm.owner_id
        settle_late(core, exc, f"disk {disk.name} deleted from {vm.host.server_name}/{vm.vm_uuid}",
                    lambda _late: _forget_disk(core, disk_id, owner))
        raise
    await _forget_disk(core, disk.id, vm.owner_id)
    return {"message": noted.final(f"disk {disk.name} deleted")}


# Recovery rule of an interrupted disk deletion: the user asked for the disk to go, so the deletion
# is finished (disk_delete is idempotent) and the task succeeds; if the VM is gone, so are its disks
# on the host, and the record and its quota are dropped.
@task_recovery("disk_delete")
async def _recover_disk_delete(core: CoreContext, task: Task, progress: TaskProgress) -> dict[str, Any]:
    try:
        return await _run_disk_delete(core, task, progress)
    except errors.VMNotFound:
        async with core.db.session() as s:
            row = await s.get(Disk, task.params["disk_id"])
            owner = (await s.get(VM, row.vm_id)).owner_id if row is not None else None  # type: ignore[union-attr]
        await _forget_disk(core, task.params["disk_id"], owner)
        return {"message": "the VM is gone, and so is the disk"}


async def list_disks(core: CoreContext, principal: Principal, hs_name: str, vm_uuid: str) -> list[dict[str, Any]]:
    async with core.db.session() as s:
        vm = await get_vm(s, principal, hs_name, vm_uuid)
        return [disk_dict(d) for d in (await s.execute(select(Disk).where(Disk.vm_id == vm.id))).scalars()]
