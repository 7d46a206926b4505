"""Virtual machines: list, detail, create, update, delete, power, status, console, password."""

from __future__ import annotations

from typing import Any

from idcs_core.api.common import finish
from idcs_core.api.routing import Ctx, Router
from idcs_core.api.schemas import HistoryQuery, PasswordBody, PowerBody, ReinstallBody, VMCreate, VMUpdate
from idcs_core.services import guest_password, vm_actions, vm_power, vm_reads, vms

router = Router("vms")

VM_ITEM = {"type": "object", "properties": {
    "vm_uuid": {"type": "string"}, "vm_name": {"type": "string"}, "os_name": {"type": "string"},
    "cpu_num": {"type": "integer"}, "ram_num": {"type": "integer", "description": "MB"},
    "mem_num": {"type": "integer", "description": "alias of ram_num (billing dialect)"},
    "hdd_num": {"type": "integer", "description": "GB"},
    "status": {"type": "string", "enum": ["running", "stopped", "paused", "creating", "deleting"]},
    "power_state": {"type": "string", "description": "the engine's own word; 'unknown' when the host "
                    "does not answer, 'missing' when the VM is not on the host"},
    "config": {"type": "object", "description": "billing dialect limits: cpu_per, speed_u, speed_d, "
               "flu_num, nat_num, web_num, nic_all, vc_port, ..."},
    "traffic_bytes": {"type": "integer", "description": "traffic counted against flu_num this period"},
    "traffic_used": {"type": "object", "description": "one VM's detail only: this period's traffic, daily and "
                     "monthly totals, as GET /api/client/traffic/{hs_name}/{vm_uuid} answers"}}}
TASK_STARTED = {"type": "object", "properties": {
    "task_id": {"type": "string"}, "vm_uuid": {"type": "string"}, "status": {"type": "string"},
    "task": {"type": "object", "description": "the finished task, when the call waited (?wait=seconds)"}}}
WAIT = {"wait": "seconds to wait for the task to finish (default 0; 300 for the global API token)"}


@router.get("/api/client/detail", data={"type": "array", "items": VM_ITEM}, vm_scoped=True)
async def list_my_vms(ctx: Ctx) -> Any:
    """Every VM you may see on every host (admins: all; a one-VM token: its VM), as stored,
    each with ``server_name``; no host is asked, so it answers at once. Live power state
    per host: ``/api/client/detail/<hs_name>``. The web panel's customer home uses it."""
    return await vm_reads.list_my_vms(ctx.core, ctx.user)


@router.get("/api/client/detail/{hs_name}", data={"type": "array", "items": VM_ITEM}, vm_scoped=True)
async def list_vms(ctx: Ctx, hs_name: str) -> Any:
    """The host's VMs you may see (admins: all), with live power state."""
    return await vm_reads.list_vms(ctx.core, ctx.user, hs_name)


@router.get("/api/client/detail/{hs_name}/{vm_uuid}", data=VM_ITEM, vm_scoped=True)
async def vm_detail(ctx: Ctx, hs_name: str, vm_uuid: str) -> Any:
    """One VM with live state, disks and ISO mounts."""
    return await vm_reads.vm_detail(ctx.core, ctx.user, hs_name, vm_uuid)


@router.post("/api/client/create/{hs_name}", body=VMCreate, data=TASK_STARTED, query=WAIT)
async def create_vm(ctx: Ctx, hs_name: str, body: VMCreate) -> Any:
    """Create a VM: returns at once with a task id; the VM shows ``creating`` until the
    task ends. Quota (VMs, CPU, RAM, disk) is checked first. Without ``vm_uuid`` a safe
    unique id is made from ``vm_name``. Per-VM limits (cpu_per, gpu_num, gpu_mem, speed_u,
    speed_d, flu_num, nat_num, web_num, nic_all) are for administrators only: 403 otherwise.

    With an API token, a retried create never makes a second VM: the same ``vm_uuid``
    answers the existing VM (or waits on its running create task); a create without
    ``vm_uuid`` answers the VM that the same token created on this host with the same
    ``vm_name`` within the last 10 minutes (unless that create failed). A ``bridge`` NIC
    is a ``pub`` NIC where the engine can give a VM its own address, else 1006."""
    fields = body.model_dump(exclude={"os_pass", "vc_pass"}) | {"config": body.config()}
    fields["os_pass"], fields["vc_pass"] = body.os_pass, body.vc_pass  # for the engine only, never stored
    if body.vc_pass:
        fields["config"]["vc_pass_set"] = True
    if ctx.user.profile is not None:  # an API token: a retried create answers the first one
        earlier = await vms.earlier_create(ctx.core, ctx.user, hs_name, body.vm_uuid if body.uuid_was_given else None,
                                           body.vm_name)
        if earlier is not None:
            return await finish(ctx, earlier) if earlier.get("task_id") else earlier
    await vms.map_bridge_nics(ctx.core, hs_name, fields["config"])
    started = await vms.create_vm(ctx.core, ctx.user, hs_name, fields)
    return await finish(ctx, started)


@router.put("/api/client/update/{hs_name}/{vm_uuid}", body=VMUpdate, data=TASK_STARTED, query=WAIT)
async def update_vm(ctx: Ctx, hs_name: str, vm_uuid: str, body: VMUpdate) -> Any:
    """Change CPU, RAM, disk or limits (a task). With ``os_name`` + ``os_pass`` it
    reinstalls, only when ``os_name`` differs from the VM's current system (a plan change
    that repeats the system keeps the disk; its ``os_pass`` is then ignored); with only
    ``password`` it sets the guest password (billing dialect).
    Per-VM limits (cpu_per, gpu_num, gpu_mem, speed_u, speed_d, flu_num, nat_num, web_num,
    nic_all) are for administrators only: 403 and nothing changes otherwise."""
    vms.require_limit_rights(ctx.user, body.config())
    if body.os_name and body.os_pass and await vms.os_differs(ctx.core, ctx.user, hs_name, vm_uuid, body.os_name):
        return await _reinstall(ctx, hs_name, vm_uuid, body.os_name, body.os_pass)
    if body.config().get("nic_all"):
        await vms.map_bridge_nics(ctx.core, hs_name, body.config())
    if body.password and not any(v is not None for v in (body.cpu_num, body.ram_num, body.hdd_num)):
        # a task of kind vm_password: its audit entry says how it ended
        await guest_password.set_password(ctx.core, ctx.user, hs_name, vm_uuid, body.password)
        return {"vm_uuid": vm_uuid}
    fields = body.model_dump(include={"cpu_num", "ram_num", "hdd_num", "vm_name"}, exclude_none=True)
    if body.config():
        fields["config"] = body.config()
    started = await vms.update_vm(ctx.core, ctx.user, hs_name, vm_uuid, fields)
    return await finish(ctx, started)


@router.delete("/api/client/delete/{hs_name}/{vm_uuid}", data=TASK_STARTED, query=WAIT)
async def delete_vm(ctx: Ctx, hs_name: str, vm_uuid: str) -> Any:
    """Delete a VM with its disks, NAT rules and backups: returns a task id; the VM shows
    ``deleting`` until it is gone. If the engine fails, the VM stays with its real status."""
    started = await vms.delete_vm(ctx.core, ctx.user, hs_name, vm_uuid)
    return await finish(ctx, started)


@router.post("/api/client/powers/{hs_name}/{vm_uuid}", body=PowerBody, vm_scoped=True)
async def power(ctx: Ctx, hs_name: str, vm_uuid: str, body: PowerBody) -> Any:
    """Power action: S_START, H_CLOSE (hard off), S_RESET (restart), S_PAUSE (suspend).

    Also accepted (billing dialect): S_RESUME, start, stop (graceful), hard_stop, reset,
    hard_reset, pause, resume."""
    # a task of kind vm_power, waited on: its audit entry says how it ended
    return await vm_power.power(ctx.core, ctx.user, hs_name, vm_uuid, body.action)


@router.get("/api/client/status/{hs_name}/{vm_uuid}", body=HistoryQuery, vm_scoped=True,
            query={"limit": "minutes of usage history (default 30)"})
async def status(ctx: Ctx, hs_name: str, vm_uuid: str, body: HistoryQuery) -> Any:
    """Live status from the engine (status, power_state, usage), plus ``power_status`` and
    ``history`` (usage samples of the last ``limit`` minutes) for the billing dialect."""
    return await vm_actions.live_status(ctx.core, ctx.user, hs_name, vm_uuid, body.limit)


@router.get("/api/client/remote/{hs_name}/{vm_uuid}", vm_scoped=True, data={"type": "object", "properties": {
    "console_url": {"type": "string", "nullable": True,
                    "description": "the core's noVNC page for this VM with a one-time ticket in its fragment"},
    "terminal_url": {"type": "string", "nullable": True,
                     "description": "the core's web terminal for this VM with a one-time ticket in its fragment"}}})
async def remote(ctx: Ctx, hs_name: str, vm_uuid: str) -> Any:
    """Console links: ``console_url`` (graphical console, noVNC) and ``terminal_url`` (web
    terminal, xterm.js), served by the core; null where the engine offers no such console.

    Each link opens one page, once: its ticket (after ``#``, so never sent in a request
    line nor logged) is consumed by the page's websocket, expires after 60 seconds, and
    is bound to this VM (not a later VM of the same name), its owner and the caller's
    session (it dies with logout and password change). Links are absolute under the
    configured public URL (``IDCS_PUBLIC_URL``), else relative to this API's origin: the
    request's ``Host`` header is never used."""
    return await vm_actions.console(ctx.core, ctx.user, hs_name, vm_uuid, ctx.core.config.public_url)


@router.post("/api/client/password/{hs_name}/{vm_uuid}", body=PasswordBody, vm_scoped=True)
async def password(ctx: Ctx, hs_name: str, vm_uuid: str, body: PasswordBody) -> Any:
    """Set the guest's root (or ``username``) password. The password is never logged."""
    # a task of kind vm_password (the password itself never stored): its audit entry says how it ended
    await guest_password.set_password(ctx.core, ctx.user, hs_name, vm_uuid, body.password, body.username)
    return {"vm_uuid": vm_uuid}


async def _reinstall(ctx: Ctx, hs_name: str, vm_uuid: str, os_name: str | None, os_pass: str | None) -> Any:
    started = await vm_actions.reinstall(ctx.core, ctx.user, hs_name, vm_uuid, os_name, os_pass)
    return await finish(ctx, started)


@router.post("/api/client/reinstall/{hs_name}/{vm_uuid}", body=ReinstallBody, data=TASK_STARTED, query=WAIT,
             vm_scoped=True)
async def reinstall(ctx: Ctx, hs_name: str, vm_uuid: str, body: ReinstallBody) -> Any:
    """Reinstall the system from ``os_name`` (default: the current one), optionally with a
    new root password ``os_pass``. The system disk's data is lost. A task."""
    return await _reinstall(ctx, hs_name, vm_uuid, body.os_name, body.os_pass)
