"""ISO images in a VM's CD-ROM: tasks of kinds ``iso_mount`` and ``iso_unmount`` (audited as
``iso.mount`` / ``iso.unmount`` when they end).

The request checks the ISO (one the host lists) and records the task; the call waits for it, as
the contract says. The record of a mounted ISO (``IsoMount``) is written once the engine has
mounted it and removed once the engine has ejected it, so the records follow the host.

- A hook that answers after its timeout (``late_hooks``): the task has failed (1003) and nothing
  was recorded, so an ISO mounted late is ejected again; an ISO ejected late has its record removed.
- A task left running by a dead process: mounting and ejecting are idempotent, so the change the
  user asked for is finished and recorded (an ISO the engine then refuses is ejected again and the
  task fails); a VM gone from the host has nothing in its drive, so the records go.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from idcs_core import errors
from idcs_core.db.models import VM, IsoMount, Task
from idcs_core.services.images import ISO_KINDS
from idcs_core.services.late_hooks import settle_late
from idcs_core.services.lookup import get_vm, task_vm
from idcs_core.tasks import task_handler, task_recovery

if TYPE_CHECKING:
    from idcs_core.context import CoreContext
    from idcs_core.services.auth import Principal
    from idcs_core.tasks import TaskProgress


async def mount_iso(core: CoreContext, principal: Principal, hs_name: str, vm_uuid: str, iso_name: str) -> None:
    """Put ``iso_name`` (one of the host's listed ISOs) in the VM's drive: an ``iso_mount`` task, waited on."""
    async with core.db.session() as s:
        vm = await get_vm(s, principal, hs_name, vm_uuid)
    core.require(vm.host, "iso_mount", "mounting ISO images")
    await core.images.require(vm.host, iso_name, ISO_KINDS, "iso_name")  # only an ISO the host lists
    async with core.db.session() as s:
        vm = await get_vm(s, principal, hs_name, vm_uuid)
        task = core.tasks.add(s, "iso_mount", host_name=hs_name, vm_uuid=vm_uuid, user_id=principal.user_id,
                              params={"vm_id": vm.id, "iso_name": iso_name})
    await core.tasks.run(task.id)


async def unmount_iso(core: CoreContext, principal: Principal, hs_name: str, vm_uuid: str, iso_name: str) -> None:
    """Eject ``iso_name`` from the VM's drive: an ``iso_unmount`` task, waited on."""
    async with core.db.session() as s:
        vm = await get_vm(s, principal, hs_name, vm_uuid)
        core.require(vm.host, "iso_unmount", "iso unmount")
        task = core.tasks.add(s, "iso_unmount", host_name=hs_name, vm_uuid=vm_uuid, user_id=principal.user_id,
                              params={"vm_id": vm.id, "iso_name": iso_name})
    await core.tasks.run(task.id)


async def _record(core: CoreContext, vm_id: int, iso_name: str, mounted: bool) -> None:
    """Write (``mounted``) or remove the record of ``iso_name`` in the VM's drive."""
    async with core.db.session() as s:
        rows = list((await s.execute(select(IsoMount).where(IsoMount.vm_id == vm_id,
                                                            IsoMount.iso_name == iso_name))).scalars())
        if mounted and not rows and await s.get(VM, vm_id) is not None:
            s.add(IsoMount(vm_id=vm_id, iso_name=iso_name))
        if not mounted:
            for row in rows:
                await s.delete(row)


@task_handler("iso_mount")
async def _run_mount(core: CoreContext, task: Task, progress: TaskProgress) -> dict[str, Any]:
    iso_name = str(task.params["iso_name"])
    async with core.db.session() as s:
        vm = await task_vm(s, task, "before the ISO was mounted")
    progress(10, f"mounting {iso_name}")
    try:
        await core.engines.iso_mount(vm, iso_name)
    except errors.IDCSError as exc:
        settle_late(core, exc, f"ISO {iso_name} mounted in {vm.host.server_name}/{vm.vm_uuid}",
                    lambda _result: _eject_late(core, vm, iso_name))
        raise
    await _record(core, vm.id, iso_name, True)
    return {"vm_uuid": vm.vm_uuid, "iso_name": iso_name, "message": f"ISO {iso_name} mounted"}


async def _eject_late(core: CoreContext, vm: VM, iso_name: str) -> None:
    """An ISO mounted after its task failed: nobody asked for it any more, so it is ejected."""
    await core.engines.iso_unmount(vm, iso_name)
    await _record(core, vm.id, iso_name, False)


@task_handler("iso_unmount")
async def _run_unmount(core: CoreContext, task: Task, progress: TaskProgress) -> dict[str, Any]:
    iso_name = str(task.params["iso_name"])
    async with core.db.session() as s:
        vm = await task_vm(s, task, "before the ISO was ejected")
    progress(10, f"ejecting {iso_name}")
    try:
        await core.engines.iso_unmount(vm, iso_name)
    except errors.IDCSError as exc:
        settle_late(core, exc, f"ISO {iso_name} ejected from {vm.host.server_name}/{vm.vm_uuid}",
                    lambda _result: _record(core, vm.id, iso_name, False))
        raise
    await _record(core, vm.id, iso_name, False)
    return {"vm_uuid": vm.vm_uuid, "iso_name": iso_name, "message": f"ISO {iso_name} ejected"}


# Recovery rule of an interrupted ISO mount: mounting is idempotent, so the mount is finished and
# recorded and the task succeeds. If the VM is gone, nothing is in its drive (records removed, task
# fails); if the engine refuses, the ISO is ejected again and the task fails with the engine's reason.
@task_recovery("iso_mount")
async def _recover_mount(core: CoreContext, task: Task, progress: TaskProgress) -> dict[str, Any]:
    iso_name = str(task.params["iso_name"])
    async with core.db.session() as s:
        vm = await task_vm(s, task, "while the ISO was being mounted")
    try:
        await core.engines.iso_mount(vm, iso_name)
    except errors.HostUnreachable:
        raise  # tried again once the host answers
    except errors.VMNotFound:
        await _record(core, vm.id, iso_name, False)
        raise errors.VMOperationFailed(f"the server stopped while ISO {iso_name} was being mounted, and the VM "
                                       "is gone") from None
    except errors.IDCSError as exc:
        try:
            await core.engines.iso_unmount(vm, iso_name)
        except errors.IDCSError as undo:
            raise errors.VMOperationFailed(f"the server stopped while ISO {iso_name} was being mounted; finishing "
                                           f"failed ({exc.msg}) and so did ejecting it ({undo.msg})") from exc
        await _record(core, vm.id, iso_name, False)
        raise errors.VMOperationFailed(f"the server stopped while ISO {iso_name} was being mounted, and finishing "
                                       f"it failed ({exc.msg}): it was ejected") from exc
    await _record(core, vm.id, iso_name, True)
    return {"vm_uuid": vm.vm_uuid, "iso_name": iso_name, "message": f"ISO {iso_name} mounted"}


# Recovery rule of an interrupted eject: ejecting is idempotent, so it is finished, the record goes and
# the task succeeds; a VM gone from the host has nothing in its drive (the record goes too).
@task_recovery("iso_unmount")
async def _recover_unmount(core: CoreContext, task: Task, progress: TaskProgress) -> dict[str, Any]:
    iso_name = str(task.params["iso_name"])
    async with core.db.session() as s:
        vm = await task_vm(s, task, "while the ISO was being ejected")
    try:
        await core.engines.iso_unmount(vm, iso_name)
    except errors.VMNotFound:
        await _record(core, vm.id, iso_name, False)
        return {"vm_uuid": vm.vm_uuid, "iso_name": iso_name, "message": "the VM is gone, and so is the ISO"}
    await _record(core, vm.id, iso_name, False)
    return {"vm_uuid": vm.vm_uuid, "iso_name": iso_name, "message": f"ISO {iso_name} ejected"}
