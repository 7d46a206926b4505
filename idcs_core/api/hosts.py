"""Hosts: list, detail, add, change, remove, power, status, scan, images, plans and ports."""

from __future__ import annotations

from typing import Any

from idcs_core import errors
from idcs_core.api.presenters import hosts as present
from idcs_core.api.routing import ADMIN, USER, Ctx, Router
from idcs_core.api.schemas import Empty, HistoryQuery, HostCreate, HostPlan, HostPower, HostUpdate
from idcs_core.services import backups, host_history, hosts, network, plans, vms

router = Router("hosts")
AVAILABLE_SHOWN = 100

HOST_ITEM = {"type": "object", "properties": {
    "server_name": {"type": "string"}, "server_type": {"type": "string"}, "server_addr": {"type": "string"},
    "status": {"type": "string", "enum": ["online", "offline"]}, "vms_count": {"type": "integer"},
    "cpu_usage": {"type": "number", "nullable": True}, "memory_usage": {"type": "number", "nullable": True},
    "server_area": {"type": "string"},
    "config": {"type": "object", "description": (
        "ports_start, ports_close, public_addr, server_plan, enabled, proxy_endpoint (where the host's "
        "reverse proxy lives when its engine has none: local = a Caddy this server runs (default), off, "
        "or http://HOST:PORT = the admin API of a Caddy dedicated to OpenIDCS)")}}}


@router.get("/api/server/detail", auth=ADMIN, data={
    "oneOf": [{"type": "array", "items": HOST_ITEM},
              {"type": "object", "additionalProperties": HOST_ITEM}]},
    query={"format": "'list' (the contract) or 'map' (keyed by server_name, the billing dialect); default: "
                     "'map' for the global API token and /api/login sessions, else 'list'"})
async def list_hosts(ctx: Ctx) -> Any:
    """All hosts with live status, asked concurrently; a host that does not answer within
    the host timeout shows as offline and never holds up the list.

    The billing dialect reads an object keyed by server_name: callers using the global
    API token or a token from ``/api/login`` get that; ``?format=list|map`` chooses.
    """
    fmt = ctx.query.get("format") or ("map" if ctx.user.dialect == "billing" else "list")
    if fmt not in ("list", "map"):
        raise errors.BadRequest("format must be list or map")
    return present.hosts(await hosts.list_hosts(ctx.core), keyed=fmt == "map")


@router.get("/api/server/detail/{hs_name}", auth=ADMIN, data=HOST_ITEM)
async def host_detail(ctx: Ctx, hs_name: str) -> Any:
    """One host with live status."""
    return present.host(await hosts.host_detail(ctx.core, hs_name))


@router.post("/api/server/create", auth=ADMIN, body=HostCreate)
async def create_host(ctx: Ctx, body: HostCreate) -> Any:
    """Add a host. The engine connects first: unreachable or bad credentials give 1003
    and nothing is saved. ``server_pass`` is stored encrypted and never returned."""
    return present.host(await hosts.create_host(ctx.core, ctx.user, body.model_dump()))


@router.put("/api/server/update/{hs_name}", auth=ADMIN, body=HostUpdate)
async def update_host(ctx: Ctx, hs_name: str, body: HostUpdate) -> Any:
    """Change any of the create fields; new connection settings are proven before saving.

    A new ``server_addr`` needs ``server_pass`` again (400 otherwise): the stored password
    is never sent to an address it was not given for."""
    fields = body.model_dump(exclude_none=True)
    if not fields:
        raise errors.BadRequest("nothing to change")
    return present.host(await hosts.update_host(ctx.core, ctx.user, hs_name, fields))


@router.delete("/api/server/delete/{hs_name}", auth=ADMIN, query={"force": "true: also forget its VM records"})
async def delete_host(ctx: Ctx, hs_name: str) -> Any:
    """Remove a host record. Refused while it has managed VMs unless ``?force=true``
    (the VMs on the host itself are never touched)."""
    force = ctx.query.get("force", "false").lower()
    if force not in ("1", "true", "yes", "0", "false", "no", ""):
        raise errors.BadRequest("force must be true or false")
    await hosts.delete_host(ctx.core, ctx.user, hs_name, force in ("1", "true", "yes"))
    return None


@router.post("/api/server/powers/{hs_name}", auth=ADMIN, body=HostPower)
async def power_host(ctx: Ctx, hs_name: str, body: HostPower) -> Any:
    """``action`` start / stop / restart powers the host (where the engine can);
    ``enable`` true / false opens or closes the host for new VMs (billing dialect)."""
    if body.action is not None:
        await hosts.power_host(ctx.core, ctx.user, hs_name, body.action)
    if body.enable is not None:
        await hosts.set_enabled(ctx.core, ctx.user, hs_name, body.enable)
    return present.host(await hosts.host_detail(ctx.core, hs_name))


@router.get("/api/server/status/{hs_name}", auth=ADMIN, data=HOST_ITEM)
async def host_status(ctx: Ctx, hs_name: str) -> Any:
    """Live status and usage, asked now (not from the short cache)."""
    return present.host(await hosts.host_detail(ctx.core, hs_name, fresh=True))


HOST_SAMPLE = {"type": "object", "properties": {
    "time": {"type": "string", "description": "ISO 8601, UTC"},
    "timestamp": {"type": "integer", "description": "the same instant, epoch seconds"},
    "status": {"type": "string", "enum": ["online", "offline"]},
    "cpu_usage": {"type": "number", "nullable": True}, "memory_usage": {"type": "number", "nullable": True},
    "disk_usage": {"type": "number", "nullable": True}}}


@router.get("/api/server/history/{hs_name}", auth=ADMIN, body=HistoryQuery,
            data={"type": "array", "items": HOST_SAMPLE},
            query={"limit": "minutes of history (default 30, at most 1440)"})
async def host_status_history(ctx: Ctx, hs_name: str, body: HistoryQuery) -> Any:
    """The host's status history, oldest first: at most one sample per ``usage_sample_seconds``
    (setting), taken whenever the host's status is asked (host list or detail, the panel's
    dashboard) and when it is added; a day kept; usage is null while offline. The web panel's
    dashboard charts it."""
    return await host_history.history(ctx.core, hs_name, body.limit)


@router.post("/api/server/backup/scan/{hs_name}", auth=ADMIN, body=Empty)
async def scan_host(ctx: Ctx, hs_name: str, body: Empty) -> Any:
    """Scan the host: record VMs and backups found there but not here."""
    return await backups.scan_host(ctx.core, ctx.user, hs_name)


@router.post("/api/client/scaner/{hs_name}", auth=ADMIN, body=Empty)
async def scan_vms(ctx: Ctx, hs_name: str, body: Empty) -> Any:
    """Record VMs that exist on the host but not here (imported without an owner)."""
    return await vms.scan_vms(ctx.core, hs_name, by=ctx.user)


@router.get("/api/client/os-images/{hs_name}", auth=USER)
async def os_images(ctx: Ctx, hs_name: str) -> Any:
    """Images the host can create VMs from, grouped by OS family."""
    return await hosts.os_images(ctx.core, hs_name)


@router.get("/api/server/plans/{hs_name}", auth=USER)
async def list_plans(ctx: Ctx, hs_name: str) -> Any:
    """The host's sale plans (cpu / mem / hdd / bandwidth / traffic), billing dialect."""
    return await plans.host_plans(ctx.core, hs_name)


@router.get("/api/server/plan/{hs_name}", auth=USER, alias_of="/api/server/plans/{hs_name}")
async def get_plan(ctx: Ctx, hs_name: str) -> Any:
    """The host's sale plans (billing dialect)."""
    return await list_plans(ctx, hs_name)


@router.post("/api/server/plan/{hs_name}", auth=ADMIN, body=HostPlan)
async def set_plan(ctx: Ctx, hs_name: str, body: HostPlan) -> Any:
    """Replace the host's sale plans: ``{"plans": [...]}`` or one plan object; or add / replace
    one plan by name: ``{"plan_name": "S", "plan_config": {"cpu_num", "mem_num" (MB), "hdd_num",
    "speed_u", "speed_d", "flu_num", "nat_num", "gpu_mem"}}`` (xiaoheiFS UpsertPlan; hdd_num and
    flu_num in the caller's profile unit, stored in GB)."""
    if body.plan_name is not None:
        if body.plan_config is None:
            raise errors.BadRequest("plan_config is required with plan_name")
        plan = {"name": body.plan_name} | body.plan_config.model_dump()
        return await plans.put_plan(ctx.core, ctx.user, hs_name, plan)
    return await plans.replace_plans(ctx.core, ctx.user, hs_name,
                                     body.plans if body.plans is not None else [body.model_extra or {}])


@router.delete("/api/server/plan/{hs_name}/{plan_name}", auth=ADMIN)
async def delete_plan(ctx: Ctx, hs_name: str, plan_name: str) -> Any:
    """Remove one sale plan by name (xiaoheiFS DeletePlan); 404 when the host has no such plan."""
    return await plans.delete_plan(ctx.core, ctx.user, hs_name, plan_name)


@router.get("/api/server/ports/{hs_name}", auth=USER)
async def ports(ctx: Ctx, hs_name: str) -> Any:
    """The host's NAT port range and public address (billing dialect), with the host ports
    still free for automatic NAT rules: ``available_count`` and the first
    ``AVAILABLE_SHOWN`` of them in ``available_ports`` (xiaoheiFS maps its SSH port from these)."""
    found = await network.host_ports(ctx.core, hs_name, "tcp")
    return {"host_name": hs_name, "ports_start": found.ports_start, "ports_close": found.ports_close,
            "public_addr": found.public_addr, "available_count": len(found.free),
            "available_ports": found.free[:AVAILABLE_SHOWN]}
