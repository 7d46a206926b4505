"""Scheduled backups: per VM or per host a cron schedule and a retention count, run as tasks.

A host's schedule starts one task per VM on the host at each slot; its retention counts per VM.

A schedule's ``next_run_at`` is stored. ``BackupScheduler`` (one loop per serving core) sleeps
until the earliest one, then *claims* each due schedule with one conditional UPDATE (``next_run_at``
moves to the next time after now only if it still holds the value read), so a run happens once
even when two loops look at the same row, and a server that was down for several slots makes one
catch-up backup, not one per missed slot. Schedules live in the database, so they survive restarts.

Each run is a ``backup_scheduled`` task (owner: the VM's owner): it makes a backup (counted in the
owner's ``max_backups`` quota), then deletes the schedule's oldest backups beyond ``retention``
(only those this schedule made; manual backups are never touched). A failure fails the task (the
``task_finished`` event, so webhooks and live events hear it) and is shown on the schedule
(``last_state``, ``last_error``).

Cron: five fields (minute hour day month weekday), ``@hourly``-style names, or six fields whose
last one is seconds (``*/10 * * * * *``), all in UTC.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

from croniter import croniter
from sqlalchemy import func, select, update

from idcs_core import errors
from idcs_core.db.models import VM, Backup, BackupSchedule, Host, Task, utcnow
from idcs_core.services import quotas
from idcs_core.services.audit import recorded
from idcs_core.services.backups import new_backup_name, settle_interrupted_backup
from idcs_core.services.lookup import get_host, get_vm, vm_target
from idcs_core.tasks import task_handler, task_recovery
from idcs_core.types import BackupInfo

if TYPE_CHECKING:
    from idcs_core.context import CoreContext
    from idcs_core.services.auth import Principal
    from idcs_core.tasks import TaskProgress

log = logging.getLogger("idcs.schedules")

MAX_SLEEP_SECONDS = 30.0  # the loop looks at the table at least this often (schedules added elsewhere)
MAX_RETENTION = 1000


def check_cron(expr: str) -> str:
    expr = " ".join(expr.split())
    fields = expr.split(" ")
    if not expr or len(expr) > 100 or not (expr.startswith("@") or len(fields) in (5, 6)) \
            or not croniter.is_valid(expr):
        raise errors.BadRequest("cron: five fields (minute hour day month weekday), six with seconds last, "
                                "or @hourly / @daily / @weekly / @monthly")
    return expr


def next_run(expr: str, after: datetime) -> datetime:
    """The first time after ``after`` (naive UTC) that ``expr`` names."""
    result: datetime = croniter(expr, after).get_next(datetime)
    return result


def schedule_dict(sch: BackupSchedule, vm: VM | None, host: Host | None = None) -> dict[str, Any]:
    """A schedule as the API shows it: of one VM (``vm_uuid`` set) or of a whole host (``vm_uuid`` null)."""
    host = host if host is not None else vm.host if vm is not None else None
    return {"id": sch.id, "server_name": host.server_name if host else None,
            "vm_uuid": vm.vm_uuid if vm is not None else None, "scope": "vm" if vm is not None else "host",
            "cron": sch.cron, "retention": sch.retention, "enabled": sch.enabled, "next_run_at": sch.next_run_at,
            "last_run_at": sch.last_run_at, "last_state": sch.last_state, "last_error": sch.last_error,
            "created_at": sch.created_at}


async def list_schedules(core: CoreContext, principal: Principal, hs_name: str, vm_uuid: str) -> list[dict[str, Any]]:
    async with core.db.session() as s:
        vm = await get_vm(s, principal, hs_name, vm_uuid)
        rows = (await s.execute(select(BackupSchedule).where(BackupSchedule.vm_id == vm.id)
                                .order_by(BackupSchedule.id))).scalars()
        return [schedule_dict(r, vm) for r in rows]


async def create_schedule(core: CoreContext, principal: Principal, hs_name: str, vm_uuid: str, cron: str,
                          retention: int, enabled: bool) -> dict[str, Any]:
    async with recorded(core, principal, "backup.schedule.create", f"{hs_name}/{vm_uuid}",
                        f"{cron} keep {retention}"):
        cron = check_cron(cron)
        if not 1 <= retention <= MAX_RETENTION:
            raise errors.BadRequest(f"retention: must lie in 1..{MAX_RETENTION}")
        async with core.db.session() as s:
            vm = await get_vm(s, principal, hs_name, vm_uuid)
            core.require(vm.host, "backup_create", "backups")
            sch = BackupSchedule(vm_id=vm.id, cron=cron, retention=retention, enabled=enabled,
                                 next_run_at=next_run(cron, utcnow()), last_state="", last_error="")
            s.add(sch)
            await s.flush()
            data = schedule_dict(sch, vm)
        if core.ops is not None:
            core.ops.scheduler.wake.set()
        return data


async def list_host_schedules(core: CoreContext, hs_name: str) -> list[dict[str, Any]]:
    async with core.db.session() as s:
        host = await get_host(s, hs_name)
        rows = (await s.execute(select(BackupSchedule).where(BackupSchedule.host_id == host.id)
                                .order_by(BackupSchedule.id))).scalars()
        return [schedule_dict(r, None, host) for r in rows]


async def create_host_schedule(core: CoreContext, principal: Principal, hs_name: str, cron: str, retention: int,
                               enabled: bool) -> dict[str, Any]:
    """A schedule that backs up every VM on the host at each slot (administrators)."""
    async with recorded(core, principal, "backup.schedule.create", hs_name, f"{cron} keep {retention}"):
        cron = check_cron(cron)
        if not 1 <= retention <= MAX_RETENTION:
            raise errors.BadRequest(f"retention: must lie in 1..{MAX_RETENTION}")
        async with core.db.session() as s:
            host = await get_host(s, hs_name)
            core.require(host, "backup_create", "backups")
            sch = BackupSchedule(host_id=host.id, cron=cron, retention=retention, enabled=enabled,
                                 next_run_at=next_run(cron, utcnow()), last_state="", last_error="")
            s.add(sch)
            await s.flush()
            data = schedule_dict(sch, None, host)
        if core.ops is not None:
            core.ops.scheduler.wake.set()
        return data


async def delete_host_schedule(core: CoreContext, principal: Principal, hs_name: str, schedule_id: int) -> None:
    async with recorded(core, principal, "backup.schedule.delete", hs_name, str(schedule_id)):
        async with core.db.session() as s:
            host = await get_host(s, hs_name)
            sch = await s.get(BackupSchedule, schedule_id)
            if sch is None or sch.host_id != host.id:
                raise errors.NotFound(f"backup schedule {schedule_id} does not exist for host {hs_name}")
            await s.delete(sch)


async def delete_schedule(core: CoreContext, principal: Principal, hs_name: str, vm_uuid: str,
                          schedule_id: int) -> None:
    """Stop the schedule; the backups it made stay (delete them one by one if wanted)."""
    async with recorded(core, principal, "backup.schedule.delete", f"{hs_name}/{vm_uuid}", str(schedule_id)):
        async with core.db.session() as s:
            vm = await get_vm(s, principal, hs_name, vm_uuid)
            sch = await s.get(BackupSchedule, schedule_id)
            if sch is None or sch.vm_id != vm.id:
                raise errors.NotFound(f"backup schedule {schedule_id} does not exist for {vm_uuid}")
            await s.delete(sch)


class BackupScheduler:
    """The loop that starts due scheduled backups."""

    def __init__(self, core: CoreContext) -> None:
        self.core = core
        self.wake = asyncio.Event()

    async def run(self) -> None:
        while True:
            try:
                delay = await self.run_due()
            except Exception:  # the database away for a moment: try again later, never end the loop
                log.exception("backup scheduler: a round failed")
                delay = MAX_SLEEP_SECONDS
            self.wake.clear()
            try:
                await asyncio.wait_for(self.wake.wait(), max(0.05, delay))
            except TimeoutError:
                pass

    async def run_due(self) -> float:
        """Start every due schedule once; return the seconds until the next one is due."""
        now = utcnow()
        async with self.core.db.session() as s:
            due = list((await s.execute(select(BackupSchedule.id, BackupSchedule.cron, BackupSchedule.next_run_at)
                                        .where(BackupSchedule.enabled.is_(True), BackupSchedule.next_run_at <= now)))
                       .all())
        for schedule_id, cron, planned in due:
            async with self.core.db.session() as s:
                claimed = await s.execute(update(BackupSchedule).where(
                    BackupSchedule.id == schedule_id, BackupSchedule.next_run_at == planned).values(
                    next_run_at=next_run(cron, now), last_run_at=now))
            if getattr(claimed, "rowcount", 0) == 1:
                await self._launch(schedule_id)
        async with self.core.db.session() as s:
            earliest = (await s.execute(select(func.min(BackupSchedule.next_run_at))
                                        .where(BackupSchedule.enabled.is_(True)))).scalar()
        if earliest is None:
            return MAX_SLEEP_SECONDS
        return min(MAX_SLEEP_SECONDS, (earliest - utcnow()).total_seconds())

    async def _launch(self, schedule_id: int) -> None:
        """One ``backup_scheduled`` task for the schedule's VM, or for each VM of its host."""
        async with self.core.db.session() as s:
            sch = await s.get(BackupSchedule, schedule_id)
            if sch is None:
                return
            if sch.host_id is not None:
                vms = list((await s.execute(select(VM).where(VM.host_id == sch.host_id)
                                            .order_by(VM.id))).scalars())
            else:
                vm = await s.get(VM, sch.vm_id) if sch.vm_id is not None else None
                vms = [vm] if vm is not None else []
            tasks, skipped = [], []
            for vm in vms:
                if vm.host is None:
                    continue
                # a VM still busy (e.g. with the previous slot's backup, when backups take longer
                # than the schedule's period) skips this slot, recorded, instead of failing it
                if vm.status in ("creating", "deleting") or self.core.tasks.busy(vm.host.server_name, vm.vm_uuid):
                    skipped.append(vm.vm_uuid)
                    continue
                tasks.append(self.core.tasks.add(s, "backup_scheduled", host_name=vm.host.server_name,
                                                 vm_uuid=vm.vm_uuid, user_id=vm.owner_id,
                                                 params={"schedule_id": schedule_id, "vm_id": vm.id}))
            sch.last_state = "running" if tasks else "success"
            sch.last_error = f"busy, not backed up: {', '.join(skipped)}"[:500] if skipped else ""
        for task in tasks:
            self.core.tasks.launch(task.id)


async def _finish_schedule(core: CoreContext, schedule_id: int, state: str, error: str = "") -> None:
    async with core.db.session() as s:
        sch = await s.get(BackupSchedule, schedule_id)
        if sch is None:
            return
        if sch.host_id is None:
            sch.last_state, sch.last_error = state, error[:500]
        elif state == "failed":  # a host's round: one VM's failure stays visible beside the others' success
            sch.last_state = "failed"
            sch.last_error = "; ".join(e for e in (sch.last_error, error) if e)[:500]
        elif sch.last_state != "failed":
            sch.last_state = state


@task_handler("backup_scheduled")
async def _run_scheduled(core: CoreContext, task: Task, progress: TaskProgress) -> dict[str, Any]:
    schedule_id = int(task.params["schedule_id"])
    try:
        return await _backup_and_prune(core, task, schedule_id, progress)
    except errors.IDCSError as exc:
        await _finish_schedule(core, schedule_id, "failed", exc.msg)
        raise
    except Exception as exc:
        await _finish_schedule(core, schedule_id, "failed", f"{type(exc).__name__}: {exc}")
        raise


@task_recovery("backup_scheduled")
async def _recover_scheduled(core: CoreContext, task: Task, progress: TaskProgress) -> dict[str, Any]:
    """Rule: a scheduled run that a restart cut short is settled like a manual backup (kept if the
    host lists it whole, else its remains removed and the run failed); retention is applied by the
    schedule's next run, which the scheduler makes at its next slot as usual."""
    schedule_id = int(task.params["schedule_id"])
    async with core.db.session() as s:
        vm = await s.get(VM, task.params["vm_id"])
        backup_id = (await s.execute(select(Backup.id).where(Backup.schedule_id == schedule_id,
                                                             Backup.status == "creating")
                                     .order_by(Backup.id.desc()).limit(1))).scalar()
    if backup_id is None:
        await _finish_schedule(core, schedule_id, "failed", "the server stopped before the backup was started")
        raise errors.VMOperationFailed("the server stopped before the scheduled backup was started; the schedule's "
                                       "next slot makes one")
    try:
        result = await settle_interrupted_backup(core, backup_id, task.host_name,
                                                 vm.owner_id if vm is not None else None, progress)
    except errors.IDCSError as exc:
        if not isinstance(exc, errors.HostUnreachable):
            await _finish_schedule(core, schedule_id, "failed", exc.msg)
        raise
    await _finish_schedule(core, schedule_id, "success")
    return result


async def _backup_and_prune(core: CoreContext, task: Task, schedule_id: int, progress: TaskProgress
                            ) -> dict[str, Any]:
    async with core.db.session() as s:
        sch = await s.get(BackupSchedule, schedule_id)
        vm = await s.get(VM, task.params["vm_id"])
        if sch is None or vm is None:
            raise errors.NotFound("the schedule or its VM was deleted")
        host, owner_id, retention, description = vm.host, vm.owner_id, sch.retention, f"scheduled ({sch.cron})"
        await quotas.charge(s, owner_id, backups=1)
        backup = Backup(host_id=vm.host_id, vm_uuid=vm.vm_uuid, backup_name=new_backup_name(),
                        description=description, status="creating", schedule_id=schedule_id)
        s.add(backup)
        await s.flush()
        backup_id, backup_name, vm_uuid = backup.id, backup.backup_name, vm.vm_uuid
    try:
        info: BackupInfo = await core.engines.backup_create(vm, backup_name, description, progress)
    except errors.IDCSError as exc:
        async with core.db.session() as s:
            row = await s.get(Backup, backup_id)
            if row is not None:
                await s.delete(row)
            await quotas.charge(s, owner_id, backups=-1)
        raise errors.VMOperationFailed(f"scheduled backup of {vm_uuid} failed: {exc.msg}") from exc
    async with core.db.session() as s:
        row = await s.get(Backup, backup_id)
        if row is not None:
            row.status, row.size_bytes = "ready", info.size_bytes
    removed, problems = await _prune(core, host, vm_uuid, owner_id, schedule_id, retention)
    await _finish_schedule(core, schedule_id, "success" if not problems else "failed", "; ".join(problems))
    message = f"backup {backup_name} made; {len(removed)} old removed"
    if problems:
        message += "; not removed: " + "; ".join(problems)
    return {"backup_name": backup_name, "removed": removed, "message": message}


async def _prune(core: CoreContext, host: Any, vm_uuid: str, owner_id: int | None, schedule_id: int,
                 retention: int) -> tuple[list[str], list[str]]:
    """Delete the schedule's ready backups beyond ``retention``, oldest first."""
    async with core.db.session() as s:
        target = await vm_target(s, host, vm_uuid)
        rows = list((await s.execute(select(Backup.id, Backup.backup_name).where(
            Backup.schedule_id == schedule_id, Backup.status == "ready", Backup.vm_uuid == vm_uuid)
            .order_by(Backup.created_at.desc(), Backup.id.desc()))).all())
    removed, problems = [], []
    for backup_id, name in rows[retention:]:
        try:
            await core.engines.backup_delete(target, name)
        except errors.IDCSError as exc:
            problems.append(f"{name}: {exc.msg}")
            continue
        async with core.db.session() as s:
            row = await s.get(Backup, backup_id)
            if row is not None:
                await s.delete(row)
                await quotas.charge(s, owner_id, backups=-1)
        removed.append(name)
    return removed, problems
