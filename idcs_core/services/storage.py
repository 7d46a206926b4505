"""Extra disks and ISO images of a VM."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from idcs_core import errors
from idcs_core.db.models import Disk, IsoMount
from idcs_core.services import limits, quotas
from idcs_core.services.lookup import get_vm
from idcs_core.types import DiskSpec

if TYPE_CHECKING:
    from idcs_core.context import CoreContext
    from idcs_core.services.auth import Principal


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
    """Create (charging ``size_gb`` to the quota) and attach, or re-attach a detached disk."""
    limits.check_disk_size(core, size_gb)
    async with core.db.session() as s:
        vm = await get_vm(s, principal, hs_name, vm_uuid)
        core.require(vm.host, "disk_attach", "extra disks")
        disk = (await s.execute(select(Disk).where(Disk.vm_id == vm.id, Disk.name == name))).scalar_one_or_none()
        created = disk is None
        if created:
            await quotas.charge(s, vm.owner_id, hdd=size_gb)
            disk = Disk(vm_id=vm.id, name=name, size_gb=size_gb, mounted=False)
            s.add(disk)
            await s.flush()
        elif disk.mounted:
            return disk_dict(disk)
        disk_id, size = disk.id, disk.size_gb
    try:
        await core.call(vm.host, "disk_attach", long=True, vm_uuid=vm_uuid, disk=DiskSpec(name, size))
    except errors.IDCSError:
        if created:
            async with core.db.session() as s:
                row = await s.get(Disk, disk_id)
                if row is not None:
                    await s.delete(row)
                    await quotas.charge(s, vm.owner_id, hdd=-size_gb)
        raise
    async with core.db.session() as s:
        row = await s.get(Disk, disk_id)
        assert row is not None
        row.mounted = True
        return disk_dict(row)


async def unmount_disk(core: CoreContext, principal: Principal, hs_name: str, vm_uuid: str,
                       name: str | None) -> dict[str, Any]:
    async with core.db.session() as s:
        vm = await get_vm(s, principal, hs_name, vm_uuid)
        disk = await _pick_disk(s, vm.id, name)
    await core.call(vm.host, "disk_detach", long=True, vm_uuid=vm_uuid, disk_name=disk.name)
    async with core.db.session() as s:
        row = await s.get(Disk, disk.id)
        assert row is not None
        row.mounted = False
        return disk_dict(row)


async def delete_disk(core: CoreContext, principal: Principal, hs_name: str, vm_uuid: str,
                      name: str | None) -> None:
    async with core.db.session() as s:
        vm = await get_vm(s, principal, hs_name, vm_uuid)
        disk = await _pick_disk(s, vm.id, name)
    await core.call(vm.host, "disk_delete", long=True, vm_uuid=vm_uuid, disk_name=disk.name)
    async with core.db.session() as s:
        row = await s.get(Disk, disk.id)
        if row is not None:
            await s.delete(row)
            await quotas.charge(s, vm.owner_id, hdd=-row.size_gb)


async def list_disks(core: CoreContext, principal: Principal, hs_name: str, vm_uuid: str) -> list[dict[str, Any]]:
    async with core.db.session() as s:
        vm = await get_vm(s, principal, hs_name, vm_uuid)
        return [disk_dict(d) for d in (await s.execute(select(Disk).where(Disk.vm_id == vm.id))).scalars()]


async def mount_iso(core: CoreContext, principal: Principal, hs_name: str, vm_uuid: str, iso_name: str) -> None:
    async with core.db.session() as s:
        vm = await get_vm(s, principal, hs_name, vm_uuid)
    await core.call(vm.host, "iso_mount", long=True, vm_uuid=vm_uuid, iso_name=iso_name)
    async with core.db.session() as s:
        exists = (await s.execute(select(IsoMount.id).where(IsoMount.vm_id == vm.id,
                                                            IsoMount.iso_name == iso_name))).first()
        if not exists:
            s.add(IsoMount(vm_id=vm.id, iso_name=iso_name))


async def unmount_iso(core: CoreContext, principal: Principal, hs_name: str, vm_uuid: str, iso_name: str) -> None:
    async with core.db.session() as s:
        vm = await get_vm(s, principal, hs_name, vm_uuid)
    await core.call(vm.host, "iso_unmount", long=True, vm_uuid=vm_uuid, iso_name=iso_name)
    async with core.db.session() as s:
        for row in (await s.execute(select(IsoMount).where(IsoMount.vm_id == vm.id,
                                                           IsoMount.iso_name == iso_name))).scalars():
            await s.delete(row)
