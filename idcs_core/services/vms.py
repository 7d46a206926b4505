"""VM life cycle: create, update, delete, scan, and recovery after a crash (reads: ``vm_reads``).

Create, update and delete are tasks: the request records the change (VM row
in ``creating``/``deleting``, quota charged, task row) in one transaction and
returns the task id; the task handler calls the engine and then either
confirms the change or undoes it, so the database never claims a VM the host
does not have.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError

from idcs_core import errors
from idcs_core.db.models import VM, Backup, Disk, Host, IPAddr, NatRuleRow, Task, utcnow
from idcs_core.engines import VMTarget
from idcs_core.ops import traffic
from idcs_core.services import limits, quotas
from idcs_core.services.audit import record, recorded
from idcs_core.services.images import CREATE_KINDS
from idcs_core.services.lookup import check_owner, get_host, get_vm, task_vm, vm_dict
from idcs_core.services.network import nat_rule
from idcs_core.tasks import ACTIVE_STATES, defer_event, task_handler, task_recovery
from idcs_core.types import VMInfo, VMSpec, VMStatus

if TYPE_CHECKING:
    from idcs_core.context import CoreContext
    from idcs_core.services.auth import Principal
    from idcs_core.tasks import TaskProgress

log = logging.getLogger("idcs.vms")

BUSY_STATES = (VMStatus.CREATING, VMStatus.DELETING)
# Passwords given at creation: handed to the engine in spec.config, never stored or shown.
SECRET_FIELDS = ("os_pass", "vc_pass")
# Per-VM limits (billing dialect) only administrators (and the global API token) may set:
# a VM's owner raising them would lift what they pay for.
ADMIN_LIMITS = (*limits.BILLING_LIMITS, "nic_all")
# Errors that say what was wrong with the request keep their code when a task fails.
KEEP_CODES = (errors.BadRequest, errors.Conflict, errors.HostUnreachable, errors.NotSupported,
              errors.QuotaExceeded, errors.VMNotFound)


def live_fields(info: VMInfo) -> dict[str, Any]:
    return {"status": info.status, "power_state": info.power_state, "cpu_usage": info.cpu_usage,
            "memory_usage": info.memory_usage, "ip_addresses": info.ip_addresses}


def spec_of(vm: VM, **config: Any) -> VMSpec:
    """What ``vm`` should be, as its record says; ``ref`` is its stored engine ref (None before create)."""
    return VMSpec(vm_uuid=vm.vm_uuid, os_name=vm.os_name, cpu_num=vm.cpu_num, ram_num=vm.ram_num,
                  hdd_num=vm.hdd_num, vm_name=vm.vm_name or None, config=dict(vm.config or {}) | config,
                  ref=vm.ref)


def note_ref(vm: VM, info: VMInfo) -> bool:
    """Store the engine's ``ref`` for ``vm`` when it reported one that differs; True when it changed."""
    if info.ref and info.ref != vm.ref:
        vm.ref = info.ref
        return True
    return False


def require_limit_rights(principal: Principal, config: dict[str, Any] | None) -> None:
    """403 when a caller who is not an administrator sends any of ``ADMIN_LIMITS``."""
    sent = sorted(k for k in ADMIN_LIMITS if (config or {}).get(k) is not None)
    if sent and not principal.is_admin:
        raise errors.Forbidden(f"only administrators may set per-VM limits ({', '.join(sent)})")


def ensure_idle(core: CoreContext, vm: VM) -> None:
    if vm.status in BUSY_STATES or core.tasks.busy(vm.host.server_name, vm.vm_uuid):
        raise errors.Conflict(f"virtual machine {vm.vm_uuid} is busy ({vm.status}); try again when it is done")


async def apply_live(core: CoreContext, vm_id: int, info: VMInfo) -> None:
    """Store the engine's view of a VM (its ref always; its status unless a task owns it)."""
    async with core.db.session() as s:
        vm = await s.get(VM, vm_id)
        if vm is None:
            return
        note_ref(vm, info)
        if vm.status in BUSY_STATES:
            return
        if vm.status != info.status or vm.power_state != info.power_state:
            vm.status, vm.power_state = info.status, info.power_state


# ---------------------------------------------------------------------- create


async def create_vm(core: CoreContext, principal: Principal, hs_name: str, fields: dict[str, Any]) -> dict[str, Any]:
    """Record the VM as ``creating``, charge the owner's quota, start the create task."""
    async with recorded(core, principal, "vm.create", f"{hs_name}/{fields['vm_uuid']}", result="started"):
        require_limit_rights(principal, fields.get("config"))
        limits.check_vm_size(core, fields)
        async with core.db.session() as s:  # os_name: one of the host's images or templates, before anything is written
            host = await get_host(s, hs_name)
            if not host.enabled:
                raise errors.BadRequest(f"host {hs_name} is closed for new virtual machines")
            await limits.require_host_grant(s, principal, host)
        core.require(host, "vm_create", "creating virtual machines")
        await core.images.require(host, fields["os_name"], CREATE_KINDS, "os_name")
        async with core.db.session() as s:
            host = await get_host(s, hs_name)
            if not host.enabled:  # closed meanwhile
                raise errors.BadRequest(f"host {hs_name} is closed for new virtual machines")
            owner_id = principal.user_id
            if fields.get("owner_id") is not None:
                if not principal.is_admin:
                    raise errors.Forbidden("only administrators may create VMs for other users")
                owner_id = int(fields["owner_id"])
                from idcs_core.services.users import get_user

                await get_user(s, owner_id)
            taken = (await s.execute(select(VM.id).where(VM.host_id == host.id,
                                                         VM.vm_uuid == fields["vm_uuid"]))).first()
            if taken:
                raise errors.Conflict(f"virtual machine {fields['vm_uuid']} already exists on host {hs_name}")
            await quotas.charge(s, owner_id, vms=1, cpu=fields["cpu_num"], ram=fields["ram_num"], hdd=fields["hdd_num"])
            vm = VM(host_id=host.id, vm_uuid=fields["vm_uuid"], vm_name=fields.get("vm_name") or fields["vm_uuid"],
                    owner_id=owner_id, os_name=fields["os_name"], cpu_num=fields["cpu_num"],
                    ram_num=fields["ram_num"], hdd_num=fields["hdd_num"], status=VMStatus.CREATING,
                    config=dict(fields.get("config") or {}))
            s.add(vm)
            try:
                await s.flush()
            except IntegrityError as exc:  # another node recorded the same name since the check above
                raise errors.Conflict(f"virtual machine {fields['vm_uuid']} already exists on host {hs_name}") from exc
            # initial passwords reach the engine through the task, encrypted, and are scrubbed after it
            secrets = {k: core.keys.encrypt(fields[k]) for k in SECRET_FIELDS if fields.get(k)}
            task = core.tasks.submit(s, "vm_create", host_name=hs_name, vm_uuid=vm.vm_uuid, user_id=principal.user_id,
                                     params={"vm_id": vm.id, "caller": caller_key(principal),
                                             "vm_name": fields.get("vm_name"), **secrets})
        return {"task_id": task.id, "vm_uuid": vm.vm_uuid, "status": vm.status}


@task_handler("vm_create")
async def _run_create(core: CoreContext, task: Task, progress: TaskProgress) -> dict[str, Any]:
    async with core.db.session() as s:
        vm = await task_vm(s, task, "before creation")
        host = vm.host
        spec = spec_of(vm)
    for key in SECRET_FIELDS:
        if task.params.get(key):
            spec.config[key] = core.keys.decrypt(task.params[key])
    password = spec.config.get("os_pass")
    progress(5, f"creating {vm.vm_uuid} on {host.server_name}")
    try:
        info: VMInfo = await core.engines.vm_create(host, spec, progress)
    except errors.IDCSError as exc:
        await _forget_vm(core, vm.id, release=True)
        if isinstance(exc, errors.HookTimeout) and exc.pending is not None:
            core.spawn(_remove_late_vm(core, host, vm.vm_uuid, exc.pending))
        if isinstance(exc, KEEP_CODES):
            raise
        raise errors.VMCreateFailed(f"creating {vm.vm_uuid} failed: {exc.msg}") from exc
    finally:
        await _scrub_params(core, task.id)
    result = await _confirm_created(core, task, vm.id, info, password_set=bool(password))
    if any(traffic.caps_of(spec.config)):
        progress(95, "applying the bandwidth caps")
        await traffic.apply_caps(core, vm.id)
    return result


async def _confirm_created(core: CoreContext, task: Task, vm_id: int, info: VMInfo, *, password_set: bool,
                           message: str = "") -> dict[str, Any]:
    """The VM exists as the engine made it: record its state, and ``vm_created`` with the task's end."""
    result: dict[str, Any] = {"vm_uuid": task.vm_uuid, "status": info.status}
    async with core.db.session() as s:
        row = await s.get(VM, vm_id)
        if row is None:  # the record was removed meanwhile (host deleted with force)
            return result
        row.status, row.power_state = info.status, info.power_state
        note_ref(row, info)
        if password_set:
            row.config = dict(row.config or {}) | {"os_pass_set": True}
        stored = await s.get(Task, task.id)
        if stored is not None:
            defer_event(stored, "vm_created", vm=vm_dict(row))
    return result | ({"message": message} if message else {})


# Recovery rule of an interrupted create, by what the host has:
# - no VM: the create never reached the host: the record goes, the quota is given back, the task fails;
# - the VM, running or paused (a create's end state on every engine shipped): it is complete; the task
#   succeeds, "recovered after a restart", and vm_created is heard once;
# - the VM in any other state: half made: it is deleted from the host, the record goes, the quota is given
#   back and the task fails with that reason.
COMPLETE_STATES = (VMStatus.RUNNING, VMStatus.PAUSED)


@task_recovery("vm_create")
async def _recover_create(core: CoreContext, task: Task, progress: TaskProgress) -> dict[str, Any]:
    async with core.db.session() as s:
        vm = await s.get(VM, task.params["vm_id"])
        if vm is None:
            raise errors.VMCreateFailed(f"the server stopped while {task.vm_uuid} was being created, and its "
                                        "record was removed meanwhile")
        host, vm_uuid = vm.host, vm.vm_uuid
    try:
        info: VMInfo = await core.engines.vm_status(vm)  # no ref yet: the engine finds it by vm_uuid
    except errors.VMNotFound:
        await _forget_vm(core, vm.id, release=True)
        await _scrub_params(core, task.id)
        raise errors.VMCreateFailed(f"the server stopped before {vm_uuid} was made on host {host.server_name}: "
                                    "nothing was left there; the record was removed") from None
    if info.status in COMPLETE_STATES:
        await _scrub_params(core, task.id)
        return await _confirm_created(core, task, vm.id, info, password_set=bool(task.params.get("os_pass")),
                                      message=f"{vm_uuid} was complete on the host ({info.status})")
    progress(50, f"removing the half-made {vm_uuid} ({info.status})")
    try:
        await core.engines.vm_delete(VMTarget(host, vm_uuid, info.ref), progress)
    except errors.HostUnreachable:
        raise  # tried again once the host answers
    except errors.IDCSError as exc:  # kept as the host has it: the record stays true, not "creating"
        async with core.db.session() as s:
            row = await s.get(VM, vm.id)
            if row is not None:
                row.status, row.power_state = info.status, info.power_state
        await _scrub_params(core, task.id)
        raise errors.VMCreateFailed(f"the server stopped while {vm_uuid} was being made, and the half-made VM "
                                    f"({info.status}) could not be deleted: {exc.msg}; it is kept as it is") from exc
    await _forget_vm(core, vm.id, release=True)
    await _scrub_params(core, task.id)
    raise errors.VMCreateFailed(f"the server stopped while {vm_uuid} was being made ({info.status} on host "
                                f"{host.server_name}): the half-made VM was deleted and the record removed")


async def _remove_late_vm(core: CoreContext, host: Host, vm_uuid: str, pending: Any) -> None:
    """A create that timed out goes on in its worker thread: if it makes the VM after all,
    delete it, so the host keeps no VM that nobody tracks (the record and quota are gone)."""
    try:
        made = await pending
    except Exception:
        return  # it failed: nothing was left behind (vm_create cleans up after itself)
    async with core.db.session() as s:
        if (await s.execute(select(VM.id).where(VM.host_id == host.id, VM.vm_uuid == vm_uuid))).first():
            log.warning("VM %s on %s was made after its create timed out, and is known again: kept", vm_uuid,
                        host.server_name)
            return
    log.warning("VM %s on %s was made after its create task timed out: removing it", vm_uuid, host.server_name)
    try:
        ref = made.ref if isinstance(made, VMInfo) else None
        await core.engines.vm_delete(VMTarget(host, vm_uuid, ref), lambda *_: None)
    except errors.IDCSError as exc:
        log.error("could not remove VM %s on %s made after its create timed out: %s", vm_uuid,
                  host.server_name, exc.msg)


async def _scrub_params(core: CoreContext, task_id: str) -> None:
    """Drop secrets from a task's params once they are no longer needed."""
    async with core.db.session() as s:
        task = await s.get(Task, task_id)
        if task is not None and any(task.params.get(k) for k in SECRET_FIELDS):
            task.params = {k: v for k, v in task.params.items() if k not in SECRET_FIELDS}


async def _forget_vm(core: CoreContext, vm_id: int, release: bool, task_id: str | None = None
                     ) -> dict[str, Any] | None:
    """Remove a VM's row (and what hangs off it) and give its owner's quota back; with ``task_id``,
    ``vm_deleted`` is heard when that task ends (written in the same transaction)."""
    async with core.db.session() as s:
        vm = await s.get(VM, vm_id)
        if vm is None:
            return None
        data = vm_dict(vm)
        if task_id is not None and (task := await s.get(Task, task_id)) is not None:
            defer_event(task, "vm_deleted", vm=data)
        if release:
            nat = (await s.execute(select(func.count(NatRuleRow.id)).where(NatRuleRow.vm_id == vm.id))).scalar_one()
            ips = (await s.execute(select(func.count(IPAddr.id)).where(IPAddr.vm_id == vm.id))).scalar_one()
            backups = (await s.execute(select(func.count(Backup.id)).where(
                Backup.host_id == vm.host_id, Backup.vm_uuid == vm.vm_uuid))).scalar_one()
            disks = (await s.execute(select(func.coalesce(func.sum(Disk.size_gb), 0))
                                     .where(Disk.vm_id == vm.id))).scalar_one()
            await quotas.charge(s, vm.owner_id, vms=-1, cpu=-vm.cpu_num, ram=-vm.ram_num,
                                hdd=-(vm.hdd_num + int(disks)), nat=-nat, ips=-ips, backups=-backups)
        await s.execute(delete(Backup).where(Backup.host_id == vm.host_id, Backup.vm_uuid == vm.vm_uuid))
        await s.delete(vm)
    return data


# ---------------------------------------------------------------------- update


async def update_vm(core: CoreContext, principal: Principal, hs_name: str, vm_uuid: str,
                    fields: dict[str, Any]) -> dict[str, Any]:
    """Change CPU/RAM/disk/limits (limits: administrators only): quota charged now, engine
    applies in a task."""
    async with recorded(core, principal, "vm.update", f"{hs_name}/{vm_uuid}", ", ".join(sorted(fields)),
                        result="started"):
        require_limit_rights(principal, fields.get("config"))
        limits.check_vm_size(core, fields)
        async with core.db.session() as s:
            vm = await get_vm(s, principal, hs_name, vm_uuid, for_update=True)
            ensure_idle(core, vm)
            core.require(vm.host, "vm_update", "changing virtual machines")
            old = {"cpu_num": vm.cpu_num, "ram_num": vm.ram_num, "hdd_num": vm.hdd_num, "os_name": vm.os_name,
                   "vm_name": vm.vm_name, "config": dict(vm.config or {})}
            new = {k: fields[k] for k in ("cpu_num", "ram_num", "hdd_num", "vm_name") if fields.get(k) is not None}
            if fields.get("config"):
                new["config"] = old["config"] | fields["config"]
            if not new:
                raise errors.BadRequest("nothing to change: give cpu_num, ram_num, hdd_num, vm_name or limits")
            await quotas.charge(s, vm.owner_id, cpu=new.get("cpu_num", vm.cpu_num) - vm.cpu_num,
                                ram=new.get("ram_num", vm.ram_num) - vm.ram_num,
                                hdd=new.get("hdd_num", vm.hdd_num) - vm.hdd_num)
            for key, value in new.items():
                setattr(vm, key, value)
            task = core.tasks.submit(s, "vm_update", host_name=hs_name, vm_uuid=vm_uuid, user_id=principal.user_id,
                                     params={"vm_id": vm.id, "old": old})
        return {"task_id": task.id, "vm_uuid": vm_uuid, "status": vm.status}


@task_handler("vm_update")
async def _run_update(core: CoreContext, task: Task, progress: TaskProgress) -> dict[str, Any]:
    async with core.db.session() as s:
        vm = await task_vm(s, task, "before the update")
        spec = spec_of(vm)
    try:
        info: VMInfo = await core.engines.vm_update(vm, spec, progress)
    except errors.IDCSError:
        old = task.params["old"]
        async with core.db.session() as s:  # put the record and the quota back as they were
            row = await s.get(VM, vm.id)
            if row is not None:
                await quotas.charge(s, row.owner_id, cpu=old["cpu_num"] - row.cpu_num,
                                    ram=old["ram_num"] - row.ram_num, hdd=old["hdd_num"] - row.hdd_num)
                for key, value in old.items():
                    setattr(row, key, value)
        raise
    await apply_live(core, vm.id, info)
    if traffic.caps_of(spec.config) != traffic.caps_of(task.params["old"].get("config")):
        await traffic.apply_caps(core, vm.id)
    return {"vm_uuid": vm.vm_uuid, "status": info.status}


# Recovery rule of an interrupted update: the record already holds the new spec, and vm_update makes
# the VM match a spec whatever it had reached, so the update is applied again; if the engine refuses,
# the handler puts the record and the quota back as they were, and the task fails.
@task_recovery("vm_update")
async def _recover_update(core: CoreContext, task: Task, progress: TaskProgress) -> dict[str, Any]:
    result = await _run_update(core, task, progress)
    return result | {"message": "the update was applied again"}


# ---------------------------------------------------------------------- delete


async def delete_vm(core: CoreContext, principal: Principal, hs_name: str, vm_uuid: str) -> dict[str, Any]:
    async with recorded(core, principal, "vm.delete", f"{hs_name}/{vm_uuid}", result="started"):
        async with core.db.session() as s:
            vm = await get_vm(s, principal, hs_name, vm_uuid, for_update=True)
            if vm.status == VMStatus.DELETING or core.tasks.busy(hs_name, vm_uuid):
                raise errors.Conflict(f"virtual machine {vm_uuid} is busy ({vm.status})")
            core.require(vm.host, "vm_delete", "deleting virtual machines")
            previous = vm.status
            vm.status = VMStatus.DELETING
            task = core.tasks.submit(s, "vm_delete", host_name=hs_name, vm_uuid=vm_uuid, user_id=principal.user_id,
                                     params={"vm_id": vm.id, "previous": previous})
        return {"task_id": task.id, "vm_uuid": vm_uuid, "status": VMStatus.DELETING}


@task_handler("vm_delete")
async def _run_delete(core: CoreContext, task: Task, progress: TaskProgress) -> dict[str, Any]:
    async with core.db.session() as s:
        vm = await s.get(VM, task.params["vm_id"])
        if vm is None:
            return {"vm_uuid": task.vm_uuid, "status": "deleted"}
        host = vm.host
        rules = list((await s.execute(select(NatRuleRow).where(NatRuleRow.vm_id == vm.id))).scalars())
        backups = list((await s.execute(select(Backup.backup_name).where(
            Backup.host_id == vm.host_id, Backup.vm_uuid == vm.vm_uuid))).scalars())
    try:
        if core.supports(host, "nat_remove"):
            for rule in rules:
                progress(10, f"removing NAT rule {rule.host_port}/{rule.protocol}")
                await core.engines.nat_remove(vm, nat_rule(rule), progress)
        progress(30, f"deleting {vm.vm_uuid}")
        await core.engines.vm_delete(vm, progress)
    except errors.IDCSError:
        await _restore_status(core, host, vm.id, task.params.get("previous", VMStatus.STOPPED))
        raise
    if backups and core.supports(host, "backup_delete"):
        for name in backups:
            try:
                await core.engines.backup_delete(vm, name)
            except errors.IDCSError as exc:
                log.warning("backup %s of deleted VM %s left on host %s: %s", name, vm.vm_uuid,
                            host.server_name, exc.msg)
    await _forget_vm(core, vm.id, release=True, task_id=task.id)
    return {"vm_uuid": vm.vm_uuid, "status": "deleted"}


# Recovery rule of an interrupted delete: the user asked for the VM to go, so the delete is finished
# (NAT rules, the VM and its backups removed again: each engine call is idempotent), the record
# removed, and the task succeeds ("recovered after a restart"); vm_deleted is heard once.
@task_recovery("vm_delete")
async def _recover_delete(core: CoreContext, task: Task, progress: TaskProgress) -> dict[str, Any]:
    async with core.db.session() as s:  # shown "deleting" again while a try waits for the host
        vm = await s.get(VM, task.params["vm_id"])
        if vm is not None:
            vm.status = VMStatus.DELETING
    result = await _run_delete(core, task, progress)
    return result | {"message": f"{task.vm_uuid} was deleted"}


async def _restore_status(core: CoreContext, host: Host, vm_id: int, fallback: str) -> None:
    """After a failed delete, show the VM as the engine reports it (or as it was)."""
    try:
        async with core.db.session() as s:
            vm = await s.get(VM, vm_id)
            target = VMTarget(host, vm.vm_uuid, vm.ref) if vm else VMTarget(host, "")
        info = await core.engines.vm_status(target)
        status, power = info.status, info.power_state
    except errors.IDCSError:
        status, power = fallback, "unknown"
    async with core.db.session() as s:
        vm = await s.get(VM, vm_id)
        if vm is not None:
            vm.status, vm.power_state = status, power


# ---------------------------------------------------------------------- scan and recovery


async def scan_vms(core: CoreContext, hs_name: str, *, by: Principal | None = None) -> dict[str, Any]:
    """Record VMs that exist on the host but not here (owner: none; admins assign them). ``by`` is
    the administrator asking (audited ``vm.scan``), None within a host scan."""
    async with recorded(core, by, "vm.scan", hs_name) as done:
        result = await _scan_vms(core, hs_name)
        done.detail = f"{result['added_count']} added"
    return result


async def _scan_vms(core: CoreContext, hs_name: str) -> dict[str, Any]:
    async with core.db.session() as s:
        host = await get_host(s, hs_name)
    found: list[VMInfo] = await core.engines.vm_list(host)
    async with core.db.session() as s:
        known = set((await s.execute(select(VM.vm_uuid).where(VM.host_id == host.id))).scalars())
    # a list may leave limits out (Docker's does): ask those VMs one by one, concurrently
    sparse = [i for i in found if i.vm_uuid not in known and None in (i.cpu_num, i.ram_num)]
    if sparse and core.supports(host, "vm_status"):
        details = await asyncio.gather(*(core.engines.vm_status(VMTarget(host, i.vm_uuid, i.ref)) for i in sparse),
                                       return_exceptions=True)
        better = {d.vm_uuid: d for d in details if isinstance(d, VMInfo)}
        found = [better.get(i.vm_uuid, i) for i in found]
    added = []
    async with core.db.session() as s:
        rows = {vm.vm_uuid: vm for vm in (await s.execute(select(VM).where(VM.host_id == host.id))).scalars()}
        known = set(rows)
        for info in found:
            if info.vm_uuid in known:
                if info.vm_uuid in rows:
                    note_ref(rows[info.vm_uuid], info)  # a known VM's ref is kept current
                continue
            s.add(VM(host_id=host.id, vm_uuid=info.vm_uuid, ref=info.ref, vm_name=info.vm_name or info.vm_uuid,
                     owner_id=None,
                     os_name=info.os_name or "", cpu_num=info.cpu_num or 0, ram_num=info.ram_num or 0,
                     hdd_num=info.hdd_num or 0, status=info.status, power_state=info.power_state))
            known.add(info.vm_uuid)
            added.append(info.vm_uuid)
    return {"added": added, "added_count": len(added), "total": len(found)}


async def reconcile_vm(core: CoreContext, vm_id: int) -> None:
    """Settle a VM left ``creating``/``deleting`` by an interrupted task, from the engine's view."""
    async with core.db.session() as s:
        vm = await s.get(VM, vm_id)
        if vm is None or vm.status not in BUSY_STATES:
            return
        host, vm_uuid, status, target = vm.host, vm.vm_uuid, vm.status, VMTarget(vm.host, vm.vm_uuid, vm.ref)
        # a task of this VM still pending/running anywhere (another node's worker included) settles it
        owned = (await s.execute(select(Task.id).where(Task.host_name == host.server_name, Task.vm_uuid == vm_uuid,
                                                      Task.state.in_(ACTIVE_STATES)).limit(1))).first()
    if owned is not None or core.tasks.busy(host.server_name, vm_uuid):
        return  # its task (or that task's recovery) settles it
    try:
        info = await core.engines.vm_status(target)
    except errors.VMNotFound:
        await _forget_vm(core, vm_id, release=True)
        log.info("VM %s/%s (%s when interrupted) is not on the host: record removed",
                 host.server_name, vm_uuid, status)
        return
    except errors.IDCSError as exc:
        log.warning("cannot reconcile VM %s/%s yet: %s", host.server_name, vm_uuid, exc.msg)
        return
    async with core.db.session() as s:
        vm = await s.get(VM, vm_id)
        if vm is not None:
            vm.status, vm.power_state = info.status, info.power_state
            note_ref(vm, info)


async def reconcile_interrupted(core: CoreContext) -> None:
    """Settle VMs left ``creating``/``deleting`` by no running task (their task's recovery settles the rest)."""
    async with core.db.session() as s:
        vms = [(vm.id, vm.host.server_name, vm.vm_uuid) for vm in (await s.execute(
            select(VM).where(VM.status.in_(BUSY_STATES)))).scalars()]
    for vm_id, host_name, vm_uuid in vms:
        if not core.tasks.busy(host_name, vm_uuid):
            await reconcile_vm(core, vm_id)


# ---------------------------------------------------------------------- billing modules' retries

RETRY_WINDOW = timedelta(minutes=10)


def caller_key(principal: Principal) -> str:
    """Who made a create, for recognising its retry: the token (named or global) or the user."""
    if principal.token_id is not None:
        return f"token:{principal.token_id}"
    if principal.via == "api_token":
        return "api-token"
    return f"user:{principal.user_id}"


async def earlier_create(core: CoreContext, principal: Principal, hs_name: str, vm_uuid: str | None,
                         vm_name: str | None) -> dict[str, Any] | None:
    """The VM a retried create means, as a create's answer (audited ``retried``); None when it
    is a new VM.

    ``vm_uuid`` given: that VM if it exists on the host (with its latest create task).
    Without it: the VM the same caller created on this host with the same ``vm_name``
    within ``RETRY_WINDOW``, unless that create failed."""
    found = await _earlier_create(core, principal, hs_name, vm_uuid, vm_name)
    if found is not None:
        await record(core, principal, "vm.create", f"{hs_name}/{found['vm_uuid']}", "retried")
    return found


async def _earlier_create(core: CoreContext, principal: Principal, hs_name: str, vm_uuid: str | None,
                          vm_name: str | None) -> dict[str, Any] | None:
    async with core.db.session() as s:
        host = await get_host(s, hs_name)
        if vm_uuid is None:
            if not vm_name:
                return None
            since = utcnow() - RETRY_WINDOW
            tasks = (await s.execute(select(Task).where(
                Task.kind == "vm_create", Task.host_name == hs_name, Task.created_at >= since,
                Task.state != "failed").order_by(Task.created_at.desc()))).scalars()
            match = next((t for t in tasks if t.params.get("caller") == caller_key(principal)
                          and t.params.get("vm_name") == vm_name), None)
            if match is None:
                return None
            vm_uuid = match.vm_uuid
        vm = (await s.execute(select(VM).where(VM.host_id == host.id, VM.vm_uuid == vm_uuid))).scalar_one_or_none()
        if vm is None:
            return None
        check_owner(principal, vm)
        task = (await s.execute(select(Task).where(Task.kind == "vm_create", Task.host_name == hs_name,
                                                   Task.vm_uuid == vm_uuid).order_by(Task.created_at.desc())
                                .limit(1))).scalar_one_or_none()
        return vm_dict(vm) | {"task_id": task.id if task else None}


async def os_differs(core: CoreContext, principal: Principal, hs_name: str, vm_uuid: str, os_name: str) -> bool:
    async with core.db.session() as s:
        vm = await get_vm(s, principal, hs_name, vm_uuid)
        return vm.os_name != os_name


async def map_bridge_nics(core: CoreContext, hs_name: str, config: dict[str, Any]) -> None:
    """``bridge`` NICs become ``pub`` where the engine gives VMs their own addresses; else 1006."""
    nics = config.get("nic_all") or {}
    bridged = [name for name, nic in nics.items() if nic.get("nic_type") == "bridge"]
    if not bridged:
        return
    async with core.db.session() as s:
        host = await get_host(s, hs_name)
    engine = core.engine_for(host)
    if not engine.supports("vm_ip_add"):
        raise errors.NotSupported(f"a bridged NIC (own public address: {', '.join(bridged)}) is not offered by the "
                                  f"{engine.name} engine of host {hs_name}; use nic_type nat")
    for name in bridged:
        nics[name] = nics[name] | {"nic_type": "pub"}
