"""A VM's backups."""

from __future__ import annotations

from typing import Any

from idcs_core.api.common import finish
from idcs_core.api.presenters import backups as present
from idcs_core.api.routing import Ctx, Router
from idcs_core.api.schemas import BackupCreate, BackupPick, BackupRestore
from idcs_core.services import backups

router = Router("backups")
WAIT = {"wait": "seconds to wait for the task to finish (default 0; 300 for the global API token)"}


@router.get("/api/client/backup/detail/{hs_name}/{vm_uuid}", vm_scoped=True)
async def list_backups(ctx: Ctx, hs_name: str, vm_uuid: str) -> Any:
    """The VM's backups (backup_name, also as vm_back; description, also as vm_tips)."""
    return present.backups(await backups.list_backups(ctx.core, ctx.user, hs_name, vm_uuid))


@router.post("/api/client/backup/create/{hs_name}/{vm_uuid}", body=BackupCreate, query=WAIT, vm_scoped=True)
async def create(ctx: Ctx, hs_name: str, vm_uuid: str, body: BackupCreate) -> Any:
    """Back the VM up (a task; the backup's name is returned at once)."""
    started = await backups.create_backup(ctx.core, ctx.user, hs_name, vm_uuid, body.description)
    return await finish(ctx, present.create_started(started))


@router.post("/api/client/backup/restore/{hs_name}/{vm_uuid}", body=BackupRestore, query=WAIT, vm_scoped=True)
async def restore(ctx: Ctx, hs_name: str, vm_uuid: str, body: BackupRestore) -> Any:
    """Bring the VM back to a backup (a task); power_on_after_restore starts it afterwards."""
    started = await backups.restore_backup(ctx.core, ctx.user, hs_name, vm_uuid, body.backup_name,
                                           body.power_on_after_restore)
    return await finish(ctx, present.restore_started(started))


@router.delete("/api/client/backup/delete/{hs_name}/{vm_uuid}", body=BackupPick, vm_scoped=True)
async def delete(ctx: Ctx, hs_name: str, vm_uuid: str, body: BackupPick) -> Any:
    """Delete a backup named by backup_name (or vm_back) in the JSON body or query string."""
    await backups.delete_backup(ctx.core, ctx.user, hs_name, vm_uuid, body.backup_name)
    return None
