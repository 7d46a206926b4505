"""Things done to a VM that exists: live status, consoles, reinstall (power: ``vm_power``; the guest's
password: ``guest_password``)."""

from __future__ import annotations

import logging
from datetime import UTC, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select

from idcs_core import errors
from idcs_core.db.models import VM, Backup, Task, UsageSample, utcnow
from idcs_core.services import quotas
from idcs_core.services.audit import recorded
from idcs_core.services.images import CREATE_KINDS
from idcs_core.services.lookup import get_vm, task_vm
from idcs_core.services.vms import (
    KEEP_CODES,
    _scrub_params,
    apply_live,
    ensure_idle,
    live_fields,
    note_ref,
    spec_of,
)
from idcs_core.tasks import task_handler, task_recovery
from idcs_core.types import BackupInfo, VMInfo, VMStatus

if TYPE_CHECKING:
    from idcs_core.context import CoreContext
    from idcs_core.services.auth import Principal
    from idcs_core.tasks import TaskProgress

log = logging.getLogger("idcs.vms")

async def live_status(core: CoreContext, principal: Principal, hs_name: str, vm_uuid: str,
                      history_minutes: int) -> dict[str, Any]:
    """Live state from the engine, plus recent usage samples (the billing dialect's history)."""
    async with core.db.session() as s:
        vm = await get_vm(s, principal, hs_name, vm_uuid)
    if vm.status in (VMStatus.CREATING, VMStatus.DELETING):
        live = {"status": vm.status, "power_state": vm.power_state}
    else:
        info = await core.engines.vm_status(vm)
        live = live_fields(info)
        await apply_live(core, vm.id, info)
        await _sample(core, vm.id, info)
    since = utcnow() - timedelta(minutes=history_minutes)
    async with core.db.session() as s:
        samples = (await s.execute(select(UsageSample).where(UsageSample.vm_id == vm.id, UsageSample.ts >= since)
                                   .order_by(UsageSample.ts))).scalars()
        # "time" ISO 8601 UTC; "timestamp" the same as epoch seconds, for clients that decode integers
        history = [{"time": x.ts, "timestamp": int(x.ts.replace(tzinfo=UTC).timestamp()), "cpu_usage": x.cpu_usage,
                    "memory_usage": x.memory_usage, "status": x.status} for x in samples]
    return {"vm_uuid": vm_uuid, **live, "power_status": live["status"], "history": history}


async def _sample(core: CoreContext, vm_id: int, info: VMInfo) -> None:
    """Keep one usage sample per ``usage_sample_seconds`` and a day of history."""
    interval = timedelta(seconds=int(core.settings.get("usage_sample_seconds")))
    now = utcnow()
    async with core.db.session() as s:
        last = (await s.execute(select(UsageSample.ts).where(UsageSample.vm_id == vm_id)
                                .order_by(UsageSample.ts.desc()).limit(1))).scalar_one_or_none()
        if last is not None and now - last < interval:
            return
        s.add(UsageSample(vm_id=vm_id, ts=now, cpu_usage=info.cpu_usage, memory_usage=info.memory_usage,
                          status=info.status))
        await s.execute(delete(UsageSample).where(UsageSample.vm_id == vm_id,
                                                  UsageSample.ts < now - timedelta(days=1)))


async def console(core: CoreContext, principal: Principal, hs_name: str, vm_uuid: str,
                  public_url: str | None) -> dict[str, Any]:
    """Links to the core's console pages, each with a one-time ticket in its fragment:
    ``console_url`` (noVNC, bridged to the engine's ``vm_console`` endpoint) and
    ``terminal_url`` (xterm.js, bridged to ``vm_terminal_open``); None where the engine
    has no such hook. Absolute under ``public_url`` when one is configured, else relative
    to the API's origin: never built from the request's ``Host`` header."""
    async with core.db.session() as s:
        vm = await get_vm(s, principal, hs_name, vm_uuid)
    engine = core.engine_for(vm.host)
    has_console, has_terminal = engine.supports("vm_console"), engine.supports("vm_terminal_open")
    if not (has_console or has_terminal):
        raise errors.NotSupported(f"a console is not supported by the {engine.name} engine")
    prefix = (public_url or "").rstrip("/")
    tickets = core.console_tickets
    return {
        "console_url": f"{prefix}/console/vnc#{await tickets.issue(principal, vm, 'vnc')}" if has_console else None,
        "terminal_url": (f"{prefix}/console/terminal#{await tickets.issue(principal, vm, 'terminal')}"
                         if has_terminal else None),
    }


# ---------------------------------------------------------------------- reinstall


async def reinstall(core: CoreContext, principal: Principal, hs_name: str, vm_uuid: str, os_name: str | None,
                    os_pass: str | None) -> dict[str, Any]:
    async with recorded(core, principal, "vm.reinstall", f"{hs_name}/{vm_uuid}", os_name or "", result="started"):
        if os_name:  # one of the host's images or templates, checked before anything is recorded
            async with core.db.session() as s:
                vm = await get_vm(s, principal, hs_name, vm_uuid)
            await core.images.require(vm.host, os_name, CREATE_KINDS, "os_name")
        async with core.db.session() as s:
            vm = await get_vm(s, principal, hs_name, vm_uuid, for_update=True)
            ensure_idle(core, vm)
            engine = core.engine_for(vm.host)
            if not (engine.supports("vm_reinstall") or (engine.supports("vm_delete") and engine.supports("vm_create"))):
                raise errors.NotSupported(f"reinstalling is not supported by the {engine.name} engine")
            previous = vm.os_name
            if os_name:
                vm.os_name = os_name
            vm.status = VMStatus.CREATING
            task = core.tasks.submit(s, "vm_reinstall", host_name=hs_name, vm_uuid=vm_uuid, user_id=principal.user_id,
                                     params={"vm_id": vm.id, "previous_os": previous,
                                             "os_pass": core.keys.encrypt(os_pass or "")})
        return {"task_id": task.id, "vm_uuid": vm_uuid, "status": VMStatus.CREATING}


@task_handler("vm_reinstall")
async def _run_reinstall(core: CoreContext, task: Task, progress: TaskProgress) -> dict[str, Any]:
    async with core.db.session() as s:
        vm = await task_vm(s, task, "before the reinstall")
        host, spec = vm.host, spec_of(vm)
    password = core.keys.decrypt(task.params.get("os_pass", ""))
    if password:
        spec.config["os_pass"] = password
    try:
        if core.supports(host, "vm_reinstall"):
            info: VMInfo = await core.engines.vm_reinstall(vm, spec, progress)
        else:
            progress(10, "deleting the old system")
            await core.engines.vm_delete(vm, progress)
            progress(50, "creating the new system")
            spec.ref = None  # a new VM: the engine gives it its ref
            info = await core.engines.vm_create(host, spec, progress)
    except errors.IDCSError as exc:
        async with core.db.session() as s:
            row = await s.get(VM, vm.id)
            if row is not None:
                row.os_name = task.params.get("previous_os", row.os_name)
                row.status = VMStatus.STOPPED
        await _refresh(core, vm.id)
        lost = await _forget_lost_backups(core, host, vm.id, spec.vm_uuid)
        if lost:
            exc.msg = f"{exc.msg}; {_lost_message(lost)}"
        if isinstance(exc, KEEP_CODES):
            raise
        raise errors.VMOperationFailed(f"reinstalling {spec.vm_uuid} failed: {exc.msg}") from exc
    finally:
        await _scrub_params(core, task.id)
    async with core.db.session() as s:
        row = await s.get(VM, vm.id)
        if row is not None:
            row.status, row.power_state = info.status, info.power_state
            note_ref(row, info)
    result: dict[str, Any] = {"vm_uuid": spec.vm_uuid, "status": info.status}
    lost = await _forget_lost_backups(core, host, vm.id, spec.vm_uuid)
    if lost:
        result |= {"backups_removed": lost, "message": f"reinstalled; {_lost_message(lost)}"}
        progress(99, result["message"])
    return result


# Recovery rule of an interrupted reinstall: the user asked for a fresh system and a reinstall replaces
# whatever is there, so it is run again from the start (with the engine's vm_reinstall, or vm_delete then
# vm_create, both idempotent about a VM half replaced or gone); it then succeeds, or fails as a reinstall
# does (old OS name back on the record, the VM shown as the host has it).
@task_recovery("vm_reinstall")
async def _recover_reinstall(core: CoreContext, task: Task, progress: TaskProgress) -> dict[str, Any]:
    result = await _run_reinstall(core, task, progress)
    return result | {"message": f"the reinstall was run again; {result.get('message') or 'reinstalled'}"}


def _lost_message(lost: list[str]) -> str:
    return (f"{len(lost)} backup(s) did not survive the reinstall on the host and were removed: "
            f"{', '.join(lost)}")


async def _forget_lost_backups(core: CoreContext, host: Any, vm_id: int, vm_uuid: str) -> list[str]:
    """After a reinstall, delete the records of the VM's backups the host no longer has.

    An engine may keep backups through a reinstall or not (a delete-and-create
    takes snapshot-like backups with it): ``backup_list`` is the truth, so a
    customer is never shown a "ready" backup that cannot be restored. Returns
    the names removed; nothing when the engine cannot list backups or the host
    does not answer (then the records are left as they are).
    """
    async with core.db.session() as s:
        rows = list((await s.execute(select(Backup).where(Backup.host_id == host.id, Backup.vm_uuid == vm_uuid,
                                                          Backup.status == "ready"))).scalars())
    if not rows or not core.supports(host, "backup_list"):
        return []
    try:
        found: list[BackupInfo] = await core.engines.backup_list(host)
    except errors.IDCSError as exc:
        log.warning("cannot check the backups of %s after its reinstall: %s", vm_uuid, exc.msg)
        return []
    present = {b.backup_name for b in found if b.vm_uuid == vm_uuid}
    lost = [b for b in rows if b.backup_name not in present]
    if not lost:
        return []
    async with core.db.session() as s:
        vm = await s.get(VM, vm_id)
        removed = []
        for backup in lost:
            row = await s.get(Backup, backup.id)
            if row is not None:
                await s.delete(row)
                removed.append(row.backup_name)
        await quotas.charge(s, vm.owner_id if vm is not None else None, backups=-len(removed))
    log.warning("reinstall of %s lost backups %s: their records were removed", vm_uuid, removed)
    return sorted(removed)


async def _refresh(core: CoreContext, vm_id: int) -> None:
    """Show the VM as the engine reports it after a failed reinstall (stopped if unknown)."""
    async with core.db.session() as s:
        vm = await s.get(VM, vm_id)
    if vm is None:
        return
    try:
        info = await core.engines.vm_status(vm)
    except errors.IDCSError:
        return
    await apply_live(core, vm_id, info)
