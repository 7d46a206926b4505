"""Backups of a VM: create, restore and delete as tasks; scan what a host holds."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from idcs_core import errors
from idcs_core.db.models import VM, Backup, Task
from idcs_core.services import quotas
from idcs_core.services.audit import recorded
from idcs_core.services.lookup import get_host, get_vm, task_vm, vm_target
from idcs_core.services.vms import KEEP_CODES, apply_live, ensure_idle, scan_vms
from idcs_core.tasks import task_handler, task_recovery
from idcs_core.types import BackupInfo, PowerAction, VMInfo

if TYPE_CHECKING:
    from idcs_core.context import CoreContext
    from idcs_core.services.auth import Principal
    from idcs_core.tasks import TaskProgress


@dataclass(frozen=True)
class BackupRecord:
    """A VM's backup as recorded here."""

    backup_name: str
    vm_uuid: str
    description: str
    size_bytes: int | None
    status: str  # creating / ready / failed
    created_at: datetime

    @classmethod
    def of(cls, b: Backup) -> BackupRecord:
        return cls(b.backup_name, b.vm_uuid, b.description, b.size_bytes, b.status, b.created_at)


@dataclass(frozen=True)
class BackupStarted:
    """A backup or restore under way: its task, and the backup it makes or brings back."""

    task_id: str
    backup_name: str


def new_backup_name() -> str:
    return f"bk-{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


async def list_backups(core: CoreContext, principal: Principal, hs_name: str, vm_uuid: str) -> list[BackupRecord]:
    async with core.db.session() as s:
        vm = await get_vm(s, principal, hs_name, vm_uuid)
        rows = (await s.execute(select(Backup).where(Backup.host_id == vm.host_id, Backup.vm_uuid == vm_uuid)
                                .order_by(Backup.created_at))).scalars()
        return [BackupRecord.of(b) for b in rows]


async def create_backup(core: CoreContext, principal: Principal, hs_name: str, vm_uuid: str,
                        description: str) -> BackupStarted:
    async with recorded(core, principal, "backup.create", f"{hs_name}/{vm_uuid}", result="started") as done:
        async with core.db.session() as s:
            vm = await get_vm(s, principal, hs_name, vm_uuid)
            ensure_idle(core, vm)
            core.require(vm.host, "backup_create", "backups")
            await quotas.charge(s, vm.owner_id, backups=1)
            backup = Backup(host_id=vm.host_id, vm_uuid=vm_uuid, backup_name=new_backup_name(),
                            description=description, status="creating")
            s.add(backup)
            await s.flush()
            task = core.tasks.submit(s, "backup_create", host_name=hs_name, vm_uuid=vm_uuid,
                                     user_id=principal.user_id,
                                     params={"backup_id": backup.id, "owner_id": vm.owner_id})
        done.detail = backup.backup_name
        return BackupStarted(task.id, backup.backup_name)


@task_handler("backup_create")
async def _run_create(core: CoreContext, task: Task, progress: TaskProgress) -> dict[str, Any]:
    async with core.db.session() as s:
        backup = await s.get(Backup, task.params["backup_id"])
        if backup is None:
            raise errors.NotFound("the backup record vanished")
        host = await get_host(s, task.host_name)
        target = await vm_target(s, host, backup.vm_uuid)
    try:
        info: BackupInfo = await core.engines.backup_create(target, backup.backup_name, backup.description,
                                                            progress)
    except errors.IDCSError as exc:
        async with core.db.session() as s:
            row = await s.get(Backup, backup.id)
            if row is not None:
                await s.delete(row)
            await quotas.charge(s, task.params.get("owner_id"), backups=-1)
        if isinstance(exc, KEEP_CODES):
            raise
        raise errors.VMOperationFailed(f"backup of {backup.vm_uuid} failed: {exc.msg}") from exc
    async with core.db.session() as s:
        row = await s.get(Backup, backup.id)
        if row is not None:
            row.status, row.size_bytes = "ready", info.size_bytes
    return {"backup_name": backup.backup_name, "size_bytes": info.size_bytes}


# Recovery rule of an interrupted backup: the backup is kept if the host lists it (the engine finished
# it: the record turns ready, the task succeeds, "recovered after a restart"); otherwise what was made
# of it is deleted on the host (backup_delete is idempotent), the record goes, the quota is given back
# and the task fails with that reason. An engine that cannot list backups always takes the second way.
@task_recovery("backup_create")
async def _recover_create(core: CoreContext, task: Task, progress: TaskProgress) -> dict[str, Any]:
    return await settle_interrupted_backup(core, task.params["backup_id"], task.host_name,
                                           task.params.get("owner_id"), progress)


async def settle_interrupted_backup(core: CoreContext, backup_id: int, host_name: str, owner_id: int | None,
                                    progress: TaskProgress) -> dict[str, Any]:
    """Rule for a backup whose making a restart cut short: kept (``ready``) if the host lists it
    whole; else what was made of it is deleted from the host, its record removed and the owner's
    quota given back, and the task fails saying so."""
    async with core.db.session() as s:
        backup = await s.get(Backup, backup_id)
        if backup is None:
            raise errors.NotFound("the server stopped while the backup was being made, and its record was removed")
        host = await get_host(s, host_name)
        target = await vm_target(s, host, backup.vm_uuid)
    if core.supports(host, "backup_list"):
        found: list[BackupInfo] = await core.engines.backup_list(host)
        made = next((b for b in found if (b.vm_uuid, b.backup_name) == (backup.vm_uuid, backup.backup_name)), None)
        if made is not None:
            async with core.db.session() as s:
                row = await s.get(Backup, backup.id)
                if row is not None:
                    row.status, row.size_bytes = "ready", made.size_bytes
            return {"backup_name": backup.backup_name, "size_bytes": made.size_bytes,
                    "message": f"backup {backup.backup_name} was complete on the host"}
    progress(50, f"removing what was made of backup {backup.backup_name}")
    left = ""
    try:
        await core.engines.backup_delete(target, backup.backup_name)
    except (errors.NotFound, errors.VMNotFound):
        pass  # nothing of it (or of its VM) is left
    except errors.HostUnreachable:
        raise  # tried again once the host answers
    except errors.IDCSError as exc:
        left = f" (removing it from the host failed: {exc.msg}; a host scan shows what is left)"
    async with core.db.session() as s:
        row = await s.get(Backup, backup.id)
        if row is not None:
            await s.delete(row)
            await quotas.charge(s, owner_id, backups=-1)
    raise errors.VMOperationFailed(f"the server stopped while backup {backup.backup_name} of {backup.vm_uuid} was "
                                   f"being made: what was made of it was removed from the host, and the record{left}")


async def restore_backup(core: CoreContext, principal: Principal, hs_name: str, vm_uuid: str, backup_name: str,
                         power_on: bool | None) -> BackupStarted:
    async with recorded(core, principal, "backup.restore", f"{hs_name}/{vm_uuid}", backup_name, result="started"):
        async with core.db.session() as s:
            vm = await get_vm(s, principal, hs_name, vm_uuid)
            ensure_idle(core, vm)
            backup = await _get_backup(s, vm, backup_name)
            if backup.status != "ready":
                raise errors.Conflict(f"backup {backup_name} is not ready ({backup.status})")
            task = core.tasks.submit(s, "backup_restore", host_name=hs_name, vm_uuid=vm_uuid,
                                     user_id=principal.user_id,
                                     params={"vm_id": vm.id, "backup_name": backup_name, "power_on": power_on})
        return BackupStarted(task.id, backup_name)


@task_handler("backup_restore")
async def _run_restore(core: CoreContext, task: Task, progress: TaskProgress) -> dict[str, Any]:
    async with core.db.session() as s:
        vm = await task_vm(s, task)
    info: VMInfo = await core.engines.backup_restore(vm, task.params["backup_name"], progress)
    if task.params.get("power_on") and info.status != "running":
        info = await core.engines.vm_power(vm, PowerAction.START)
    await apply_live(core, vm.id, info)
    return {"vm_uuid": vm.vm_uuid, "status": info.status}


# Recovery rule of an interrupted restore: a restore brings the VM to the backup's state whatever state
# it is in (half restored included), so it is run again; it then succeeds or fails as a restore does.
@task_recovery("backup_restore")
async def _recover_restore(core: CoreContext, task: Task, progress: TaskProgress) -> dict[str, Any]:
    result = await _run_restore(core, task, progress)
    return result | {"message": f"the restore of {task.params['backup_name']} was run again"}


async def delete_backup(core: CoreContext, principal: Principal, hs_name: str, vm_uuid: str, backup_name: str) -> None:
    async with recorded(core, principal, "backup.delete", f"{hs_name}/{vm_uuid}", backup_name):
        await _delete_backup(core, principal, hs_name, vm_uuid, backup_name)


async def _delete_backup(core: CoreContext, principal: Principal, hs_name: str, vm_uuid: str, backup_name: str) -> None:
    async with core.db.session() as s:
        vm = await get_vm(s, principal, hs_name, vm_uuid)
        backup = await _get_backup(s, vm, backup_name)
        if backup.status == "creating":
            raise errors.Conflict(f"backup {backup_name} is still being made")
    await core.engines.backup_delete(vm, backup_name)
    async with core.db.session() as s:
        row = await s.get(Backup, backup.id)
        if row is not None:
            await s.delete(row)
            await quotas.charge(s, vm.owner_id, backups=-1)


async def _get_backup(s: Any, vm: VM, backup_name: str) -> Backup:
    backup = (await s.execute(select(Backup).where(Backup.host_id == vm.host_id, Backup.vm_uuid == vm.vm_uuid,
                                                   Backup.backup_name == backup_name))).scalar_one_or_none()
    if backup is None:
        raise errors.NotFound(f"backup {backup_name} does not exist for {vm.vm_uuid}")
    return backup


async def scan_host(core: CoreContext, principal: Principal, hs_name: str) -> dict[str, Any]:
    """Find the host's VMs and its backups and record those not yet known."""
    async with recorded(core, principal, "host.scan", hs_name):
        result = await scan_vms(core, hs_name)
        async with core.db.session() as s:
            host = await get_host(s, hs_name)
        added: list[str] = []
        total = 0
        if core.supports(host, "backup_list"):
            found: list[BackupInfo] = await core.engines.backup_list(host)
            total = len(found)
            async with core.db.session() as s:
                known = {(b.vm_uuid, b.backup_name) for b in (await s.execute(
                    select(Backup).where(Backup.host_id == host.id))).scalars()}
                for info in found:
                    if (info.vm_uuid, info.backup_name) in known:
                        continue
                    s.add(Backup(host_id=host.id, vm_uuid=info.vm_uuid, backup_name=info.backup_name,
                                 description=info.description, size_bytes=info.size_bytes, status="ready"))
                    known.add((info.vm_uuid, info.backup_name))
                    added.append(f"{info.vm_uuid}/{info.backup_name}")
        return {"vms": result, "backups": {"added": added, "added_count": len(added), "total": total}}
