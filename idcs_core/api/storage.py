"""A VM's extra disks and ISO images."""

from __future__ import annotations

from typing import Any

from idcs_core.api.routing import Ctx, Router
from idcs_core.api.schemas import DiskMount, DiskPick, IsoMount
from idcs_core.services import iso_mounts, storage

router = Router("storage")


@router.get("/api/client/hdd/detail/{hs_name}/{vm_uuid}", vm_scoped=True)
async def list_disks(ctx: Ctx, hs_name: str, vm_uuid: str) -> Any:
    """The VM's extra disks."""
    return await storage.list_disks(ctx.core, ctx.user, hs_name, vm_uuid)


@router.post("/api/client/hdd/mount/{hs_name}/{vm_uuid}", body=DiskMount)
async def mount(ctx: Ctx, hs_name: str, vm_uuid: str, body: DiskMount) -> Any:
    """Create (if new; hdd_size GB counts against the disk quota) and attach disk hdd_name."""
    return await storage.mount_disk(ctx.core, ctx.user, hs_name, vm_uuid, body.hdd_name, body.hdd_size)


@router.post("/api/client/hdd/unmount/{hs_name}/{vm_uuid}", body=DiskPick)
async def unmount(ctx: Ctx, hs_name: str, vm_uuid: str, body: DiskPick) -> Any:
    """Detach a disk, keeping its data. hdd_name may be left out when the VM has one extra disk."""
    return await storage.unmount_disk(ctx.core, ctx.user, hs_name, vm_uuid, body.hdd_name)


@router.delete("/api/client/hdd/delete/{hs_name}/{vm_uuid}", body=DiskPick)
async def delete(ctx: Ctx, hs_name: str, vm_uuid: str, body: DiskPick) -> Any:
    """Destroy a disk and its data (hdd_name in the body or query; optional with one disk)."""
    await storage.delete_disk(ctx.core, ctx.user, hs_name, vm_uuid, body.hdd_name)
    return None


@router.post("/api/client/iso/mount/{hs_name}/{vm_uuid}", body=IsoMount)
async def iso_mount(ctx: Ctx, hs_name: str, vm_uuid: str, body: IsoMount) -> Any:
    """Insert an ISO image (one of the host's os-images) into the VM's CD-ROM."""
    await iso_mounts.mount_iso(ctx.core, ctx.user, hs_name, vm_uuid, body.iso_name)  # task iso_mount: audited
    return None


@router.delete("/api/client/iso/unmount/{hs_name}/{vm_uuid}/{iso_name:path}")
async def iso_unmount(ctx: Ctx, hs_name: str, vm_uuid: str, iso_name: str) -> Any:
    """Eject an ISO image."""
    await iso_mounts.unmount_iso(ctx.core, ctx.user, hs_name, vm_uuid, iso_name)  # task iso_unmount: audited
    return None
