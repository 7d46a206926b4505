"""VM life cycle: list, create, update, delete, scan, and recovery after a crash.

Create, update and delete are tasks: the request records the change (VM row
in ``creating``/``deleting``, quota charged, task row) in one transaction and
returns the task id; the task handler calls the engine and then either
confirms the change or undoes it, so the database never claims a VM the host
does not have.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, select

from idcs_core import errors
from idcs_core.db.models import VM, Backup, Disk, Host, IPAddr, NatRuleRow, Task
from idcs_core.services import limits, quotas
from idcs_core.services.lookup import get_host, get_vm, vm_dict
from idcs_core.tasks import task_dict, task_handler
from idcs_core.types import NatRule, VMInfo, VMSpec, VMStatus

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
ADMIN_LIMITS = ("cpu_per", "gpu_num", "gpu_mem", "speed_u", "speed_d", "flu_num", "nat_num", "web_num", "nic_all")
# Errors that say what was wrong with the request keep their code when a task fails.
KEEP_CODES = (errors.BadRequest, errors.Conflict, errors.HostUnreachable, errors.NotSupported,
              errors.QuotaExceeded, errors.VMNotFound)


def live_fields(info: VMInfo) -> dict[str, Any]:
    return {"status": info.status, "power_state": info.power_state, "cpu_usage": info.cpu_usage,
            "memory_usage": info.memory_usage, "ip_addresses": info.ip_addresses}


def spec_of(vm: VM, **config: Any) -> VMSpec:
    return VMSpec(vm_uuid=vm.vm_uuid, os_name=vm.os_name, cpu_num=vm.cpu_num, ram_num=vm.ram_num,
                  hdd_num=vm.hdd_num, vm_name=vm.vm_name or None, config=dict(vm.config or {}) | config)


def require_limit_rights(principal: Principal, config: dict[str, Any] | None) -> None:
    """403 when a caller who is not an administrator sends any of ``ADMIN_LIMITS``."""
    sent = sorted(k for k in ADMIN_LIMITS if (config or {}).get(k) is not None)
    if sent and not principal.is_admin:
        raise errors.Forbidden(f"only administrators may set per-VM limits ({', '.join(sent)})")


def ensure_idle(core: CoreContext, vm: VM) -> None:
    if vm.status in BUSY_STATES or core.tasks.busy(vm.host.server_name, vm.vm_uuid):
        raise errors.Conflict(f"virtual machine {vm.vm_uuid} is busy ({vm.status}); try again when it is done")


async def apply_live(core: CoreContext, vm_id: int, info: VMInfo) -> None:
    """Store the engine's view of a VM unless a task owns its status."""
    async with core.db.session() as s:
        vm = await s.get(VM, vm_id)
        if vm is None or vm.status in BUSY_STATES:
            return
        if vm.status != info.status or vm.power_state != info.power_state:
            vm.status, vm.power_state = info.status, info.power_state


# ---------------------------------------------------------------------- reading


async def list_vms(core: CoreContext, principal: Principal, hs_name: str) -> list[dict[str, Any]]:
    """The host's managed VMs the caller may see, with live power state from one engine call.

    The host's rows come from memory until something is written (``core.reads``); the
    engine is asked at once, so a list costs about one engine call."""
    host, all_vms = await core.reads.get(f"vms:{hs_name}", lambda: _host_vms(core, hs_name))
    if principal.vm_id is not None:
        vms = [vm for vm in all_vms if vm.id == principal.vm_id]
    elif principal.is_admin:
        vms = all_vms
    else:
        vms = [vm for vm in all_vms if vm.owner_id == principal.user_id]
    live: dict[str, VMInfo] = {}
    host_error = ""
    try:
        live = {info.vm_uuid: info for info in await core.call(host, "vm_list")}
    except errors.IDCSError as exc:
        host_error = exc.msg
    changed = []
    result = []
    for vm in vms:
        info = live.get(vm.vm_uuid)
        extra: dict[str, Any] = {}
        if info is not None and vm.status not in BUSY_STATES:
            if (vm.status, vm.power_state) != (info.status, info.power_state):
                changed.append((vm.id, info))
            extra = {"status": info.status, "power_state": info.power_state, "ip_addresses": info.ip_addresses}
        elif host_error:
            extra = {"power_state": "unknown", "host_error": host_error}
        elif vm.status not in BUSY_STATES:
            extra = {"power_state": "missing"}
        result.append(vm_dict(vm, extra))
    for vm_id, info in changed:
        await apply_live(core, vm_id, info)
    return result


async def _host_vms(core: CoreContext, hs_name: str) -> tuple[Host, list[VM]]:
    async with core.db.session() as s:
        host = await get_host(s, hs_name)
        vms = list((await s.execute(select(VM).where(VM.host_id == host.id).order_by(VM.id))).scalars())
    return host, vms


async def vm_detail(core: CoreContext, principal: Principal, hs_name: str, vm_uuid: str) -> dict[str, Any]:
    async with core.db.session() as s:
        vm = await get_vm(s, principal, hs_name, vm_uuid)
        host = vm.host
        extras = await _attachments(s, vm)
    live: dict[str, Any] = {}
    if vm.status in BUSY_STATES and not core.tasks.busy(hs_name, vm_uuid):
        await reconcile_vm(core, vm.id)
    try:
        info = await core.call(host, "vm_status", vm_uuid=vm_uuid)
        live = live_fields(info)
        if vm.status in BUSY_STATES:
            live["status"] = vm.status
        else:
            await apply_live(core, vm.id, info)
    except errors.VMNotFound:
        live = {"power_state": "missing"}
    except errors.IDCSError as exc:
        live = {"power_state": "unknown", "host_error": exc.msg}
    return vm_dict(vm, live) | extras


async def _attachments(s: Any, vm: VM) -> dict[str, Any]:
    from idcs_core.db.models import Disk, IsoMount

    disks = (await s.execute(select(Disk).where(Disk.vm_id == vm.id))).scalars()
    isos = (await s.execute(select(IsoMount).where(IsoMount.vm_id == vm.id))).scalars()
    nat = (await s.execute(select(func.count(NatRuleRow.id)).where(NatRuleRow.vm_id == vm.id))).scalar_one()
    return {"disks": [{"hdd_name": d.name, "hdd_size": d.size_gb, "mounted": d.mounted} for d in disks],
            "isos": [i.iso_name for i in isos], "nat_count": nat}


# ---------------------------------------------------------------------- create


async def create_vm(core: CoreContext, principal: Principal, hs_name: str, fields: dict[str, Any]) -> dict[str, Any]:
    """Record the VM as ``creating``, charge the owner's quota, start the create task."""
    require_limit_rights(principal, fields.get("config"))
    limits.check_vm_size(core, fields)
    async with core.db.session() as s:
        host = await get_host(s, hs_name)
        if not host.enabled:
            raise errors.BadRequest(f"host {hs_name} is closed for new virtual machines")
        await limits.require_host_grant(s, principal, host)
        core.require(host, "vm_create", "creating virtual machines")
        owner_id = principal.user_id
        if fields.get("owner_id") is not None:
            if not principal.is_admin:
                raise errors.Forbidden("only administrators may create VMs for other users")
            owner_id = int(fields["owner_id"])
            from idcs_core.services.users import get_user

            await get_user(s, owner_id)
        taken = (await s.execute(select(VM.id).where(VM.host_id == host.id, VM.vm_uuid == fields["vm_uuid"]))).first()
        if taken:
            raise errors.Conflict(f"virtual machine {fields['vm_uuid']} already exists on host {hs_name}")
        await quotas.charge(s, owner_id, vms=1, cpu=fields["cpu_num"], ram=fields["ram_num"], hdd=fields["hdd_num"])
        vm = VM(host_id=host.id, vm_uuid=fields["vm_uuid"], vm_name=fields.get("vm_name") or fields["vm_uuid"],
                owner_id=owner_id, os_name=fields["os_name"], cpu_num=fields["cpu_num"],
                ram_num=fields["ram_num"], hdd_num=fields["hdd_num"], status=VMStatus.CREATING,
                config=dict(fields.get("config") or {}))
        s.add(vm)
        await s.flush()
        # initial passwords reach the engine through the task, encrypted, and are scrubbed after it
        secrets = {k: core.keys.encrypt(fields[k]) for k in SECRET_FIELDS if fields.get(k)}
        task = core.tasks.add(s, "vm_create", host_name=hs_name, vm_uuid=vm.vm_uuid, user_id=principal.user_id,
                              params={"vm_id": vm.id, **secrets})
    core.tasks.launch(task.id)
    return {"task_id": task.id, "vm_uuid": vm.vm_uuid, "status": vm.status}


@task_handler("vm_create")
async def _run_create(core: CoreContext, task: Task, progress: TaskProgress) -> dict[str, Any]:
    async with core.db.session() as s:
        vm = await s.get(VM, task.params["vm_id"])
        if vm is None:
            raise errors.VMNotFound("the VM record vanished before creation")
        host = vm.host
        spec = spec_of(vm)
    for key in SECRET_FIELDS:
        if task.params.get(key):
            spec.config[key] = core.keys.decrypt(task.params[key])
    password = spec.config.get("os_pass")
    progress(5, f"creating {vm.vm_uuid} on {host.server_name}")
    try:
        info: VMInfo = await core.call(host, "vm_create", long=True, spec=spec, progress=progress)
    except errors.IDCSError as exc:
        await _forget_vm(core, vm.id, release=True)
        if isinstance(exc, errors.HookTimeout) and exc.pending is not None:
            core.spawn(_remove_late_vm(core, host, vm.vm_uuid, exc.pending))
        if isinstance(exc, KEEP_CODES):
            raise
        raise errors.VMCreateFailed(f"creating {vm.vm_uuid} failed: {exc.msg}") from exc
    finally:
        await _scrub_params(core, task.id)
    async with core.db.session() as s:
        row = await s.get(VM, vm.id)
        if row is None:  # the record was removed meanwhile (host deleted with force)
            return {"vm_uuid": vm.vm_uuid, "status": info.status}
        row.status, row.power_state = info.status, info.power_state
        if password:
            row.config = dict(row.config or {}) | {"os_pass_set": True}
        data = vm_dict(row)
    await core.plugins.emit("vm_created", vm=data)
    return {"vm_uuid": vm.vm_uuid, "status": info.status}


async def _remove_late_vm(core: CoreContext, host: Host, vm_uuid: str, pending: Any) -> None:
    """A create that timed out goes on in its worker thread: if it makes the VM after all,
    delete it, so the host keeps no VM that nobody tracks (the record and quota are gone)."""
    try:
        await pending
    except Exception:
        return  # it failed: nothing was left behind (vm_create cleans up after itself)
    async with core.db.session() as s:
        if (await s.execute(select(VM.id).where(VM.host_id == host.id, VM.vm_uuid == vm_uuid))).first():
            log.warning("VM %s on %s was made after its create timed out, and is known again: kept", vm_uuid,
                        host.server_name)
            return
    log.warning("VM %s on %s was made after its create task timed out: removing it", vm_uuid, host.server_name)
    try:
        await core.call(host, "vm_delete", long=True, vm_uuid=vm_uuid, progress=lambda *_: None)
    except errors.IDCSError as exc:
        log.error("could not remove VM %s on %s made after its create timed out: %s", vm_uuid,
                  host.server_name, exc.msg)


async def _scrub_params(core: CoreContext, task_id: str) -> None:
    """Drop secrets from a task's params once they are no longer needed."""
    async with core.db.session() as s:
        task = await s.get(Task, task_id)
        if task is not None and any(task.params.get(k) for k in SECRET_FIELDS):
            task.params = {k: v for k, v in task.params.items() if k not in SECRET_FIELDS}


async def _forget_vm(core: CoreContext, vm_id: int, release: bool) -> dict[str, Any] | None:
    """Remove a VM's row (and what hangs off it) and give its owner's quota back."""
    async with core.db.session() as s:
        vm = await s.get(VM, vm_id)
        if vm is None:
            return None
        data = vm_dict(vm)
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
        task = core.tasks.add(s, "vm_update", host_name=hs_name, vm_uuid=vm_uuid, user_id=principal.user_id,
                              params={"vm_id": vm.id, "old": old})
    core.tasks.launch(task.id)
    return {"task_id": task.id, "vm_uuid": vm_uuid, "status": vm.status}


@task_handler("vm_update")
async def _run_update(core: CoreContext, task: Task, progress: TaskProgress) -> dict[str, Any]:
    async with core.db.session() as s:
        vm = await s.get(VM, task.params["vm_id"])
        if vm is None:
            raise errors.VMNotFound("the VM record vanished before the update")
        host, spec = vm.host, spec_of(vm)
    try:
        info: VMInfo = await core.call(host, "vm_update", long=True, spec=spec, progress=progress)
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
    return {"vm_uuid": vm.vm_uuid, "status": info.status}


# ---------------------------------------------------------------------- delete


async def delete_vm(core: CoreContext, principal: Principal, hs_name: str, vm_uuid: str) -> dict[str, Any]:
    async with core.db.session() as s:
        vm = await get_vm(s, principal, hs_name, vm_uuid, for_update=True)
        if vm.status == VMStatus.DELETING or core.tasks.busy(hs_name, vm_uuid):
            raise errors.Conflict(f"virtual machine {vm_uuid} is busy ({vm.status})")
        core.require(vm.host, "vm_delete", "deleting virtual machines")
        previous = vm.status
        vm.status = VMStatus.DELETING
        task = core.tasks.add(s, "vm_delete", host_name=hs_name, vm_uuid=vm_uuid, user_id=principal.user_id,
                              params={"vm_id": vm.id, "previous": previous})
    core.tasks.launch(task.id)
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
                await core.call(host, "nat_remove", long=True, vm_uuid=vm.vm_uuid,
                                rule=NatRule(rule.host_port, rule.vm_port, rule.protocol, rule.lan_addr))
        progress(30, f"deleting {vm.vm_uuid}")
        await core.call(host, "vm_delete", long=True, vm_uuid=vm.vm_uuid, progress=progress)
    except errors.IDCSError:
        await _restore_status(core, host, vm.id, task.params.get("previous", VMStatus.STOPPED))
        raise
    if backups and core.supports(host, "backup_delete"):
        for name in backups:
            try:
                await core.call(host, "backup_delete", long=True, vm_uuid=vm.vm_uuid, backup_name=name)
            except errors.IDCSError as exc:
                log.warning("backup %s of deleted VM %s left on host %s: %s", name, vm.vm_uuid,
                            host.server_name, exc.msg)
    data = await _forget_vm(core, vm.id, release=True)
    if data:
        await core.plugins.emit("vm_deleted", vm=data)
    return {"vm_uuid": vm.vm_uuid, "status": "deleted"}


async def _restore_status(core: CoreContext, host: Host, vm_id: int, fallback: str) -> None:
    """After a failed delete, show the VM as the engine reports it (or as it was)."""
    try:
        async with core.db.session() as s:
            vm = await s.get(VM, vm_id)
            vm_uuid = vm.vm_uuid if vm else ""
        info = await core.call(host, "vm_status", vm_uuid=vm_uuid)
        status, power = info.status, info.power_state
    except errors.IDCSError:
        status, power = fallback, "unknown"
    async with core.db.session() as s:
        vm = await s.get(VM, vm_id)
        if vm is not None:
            vm.status, vm.power_state = status, power


# ---------------------------------------------------------------------- scan and recovery


async def scan_vms(core: CoreContext, hs_name: str) -> dict[str, Any]:
    """Record VMs that exist on the host but not here (owner: none; admins assign them)."""
    async with core.db.session() as s:
        host = await get_host(s, hs_name)
    found: list[VMInfo] = await core.call(host, "vm_list")
    async with core.db.session() as s:
        known = set((await s.execute(select(VM.vm_uuid).where(VM.host_id == host.id))).scalars())
    # a list may leave limits out (Docker's does): ask those VMs one by one, concurrently
    sparse = [i for i in found if i.vm_uuid not in known and None in (i.cpu_num, i.ram_num)]
    if sparse and core.supports(host, "vm_status"):
        details = await asyncio.gather(*(core.call(host, "vm_status", vm_uuid=i.vm_uuid) for i in sparse),
                                       return_exceptions=True)
        better = {d.vm_uuid: d for d in details if isinstance(d, VMInfo)}
        found = [better.get(i.vm_uuid, i) for i in found]
    added = []
    async with core.db.session() as s:
        known = set((await s.execute(select(VM.vm_uuid).where(VM.host_id == host.id))).scalars())
        for info in found:
            if info.vm_uuid in known:
                continue
            s.add(VM(host_id=host.id, vm_uuid=info.vm_uuid, vm_name=info.vm_name or info.vm_uuid, owner_id=None,
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
        host, vm_uuid, status = vm.host, vm.vm_uuid, vm.status
    try:
        info = await core.call(host, "vm_status", vm_uuid=vm_uuid)
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


async def reconcile_interrupted(core: CoreContext, tasks: list[Task]) -> None:
    async with core.db.session() as s:
        ids = [vm.id for vm in (await s.execute(select(VM).where(VM.status.in_(BUSY_STATES)))).scalars()]
    for vm_id in ids:
        await reconcile_vm(core, vm_id)


async def get_task(core: CoreContext, principal: Principal, task_id: str) -> dict[str, Any]:
    async with core.db.session() as s:
        task = await s.get(Task, task_id)
        if task is None or (not principal.is_admin and task.user_id != principal.user_id):
            raise errors.NotFound(f"task {task_id} does not exist")
        return task_dict(task)


async def list_tasks(core: CoreContext, principal: Principal, limit: int, state: str | None) -> list[dict[str, Any]]:
    async with core.db.session() as s:
        query = select(Task).order_by(Task.created_at.desc()).limit(limit)
        if not principal.is_admin:
            query = query.where(Task.user_id == principal.user_id)
        if state:
            query = query.where(Task.state == state)
        return [task_dict(t) for t in (await s.execute(query)).scalars()]
