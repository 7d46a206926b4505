"""Routes of the billing modules' dialect that API.md lacks: one-VM tokens and traffic reset.

(The dialect's other additions live with their areas: ``/api/system/statis`` in system,
plans and ports in hosts, NAT/proxy checks in network.)
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from sqlalchemy import select
from starlette.responses import RedirectResponse

from idcs_core import errors
from idcs_core.api.routing import ADMIN, PUBLIC, Ctx, Router
from idcs_core.api.schemas import TrafficReset
from idcs_core.db.models import VM, Host
from idcs_core.ops import traffic
from idcs_core.services.lookup import get_vm, vm_dict

router = Router("compat")


@router.get("/api/client/temptoken/{hs_name}/{vm_uuid}", auth=ADMIN, data={"type": "object", "properties": {
    "temp_token": {"type": "string"}, "expire": {"type": "integer", "description": "epoch seconds"}}})
async def temp_token(ctx: Ctx, hs_name: str, vm_uuid: str) -> Any:
    """A short-lived token valid for this one VM only (the customer's "open panel" link).

    Lifetime: setting ``temp_token_ttl_seconds``. Exchange it with ``/api/client/templogin``,
    or send it as a bearer token directly: either way it reaches this VM and nothing else."""
    async with ctx.core.db.session() as s:
        vm = await get_vm(s, ctx.user, hs_name, vm_uuid)
    ttl = int(ctx.core.settings.get("temp_token_ttl_seconds"))
    token, expire = await ctx.core.auth.issue(vm.owner_id, ctx.source_ip, vm_id=vm.id, ttl=ttl, dialect="billing")
    await ctx.core.audit(ctx.user, "vm.temptoken", f"{hs_name}/{vm_uuid}", source_ip=ctx.source_ip)
    return {"temp_token": token, "expire": expire}


@router.get("/api/client/templogin", auth=PUBLIC, query={"token": "a temp_token from /api/client/temptoken"})
async def temp_login(ctx: Ctx) -> Any:
    """The billing modules' "open panel" link: turns a temporary token into a session limited
    to its VM and lands the browser on the web panel's page for that VM (303 to
    ``/#temp=<session token>&hs=<hs_name>&vm=<vm_uuid>``; the fragment never reaches a
    server log). Only a temporary token is taken, once (a second exchange, or
    exchanging the session itself, answers 401); the session ends when the temporary token would
    have ended. ``token=`` values are masked in the access log."""
    raw = ctx.query.get("token", "")
    if not raw:
        raise errors.BadRequest("token is required")
    token, _expire, vm_id = await ctx.core.auth.exchange_temp(raw, ctx.source_ip)
    async with ctx.core.db.session() as s:
        vm = await s.get(VM, vm_id)
        if vm is None:
            raise errors.VMNotFound()
        data = vm_dict(vm)
    fragment = urlencode({"temp": token, "hs": data["server_name"], "vm": data["vm_uuid"]})
    return RedirectResponse(f"/#{fragment}", status_code=303, headers={"Cache-Control": "no-store",
                                                                       "Referrer-Policy": "no-referrer"})


@router.post("/api/traffic/reset", auth=ADMIN, body=TrafficReset)
async def traffic_reset(ctx: Ctx, body: TrafficReset) -> Any:
    """Start a new traffic period for a VM now: its counted traffic (``traffic_bytes``,
    ``traffic_used``) goes back to 0 and its ``flu_num`` allowance starts again; a throttle or a
    suspension for passing it is lifted. Daily totals are kept. (Otherwise a period is a calendar
    month, UTC.)

    ``hs_name`` may be left out (IDCSmart sends only ``?hostname=<vm_uuid>``): the VM is then
    found by its id; 400 when several hosts have a VM of that id."""
    async with ctx.core.db.session() as s:
        hs_name = body.hs_name
        if hs_name is None:
            hosts = list((await s.execute(select(Host.server_name).join(VM, VM.host_id == Host.id)
                                          .where(VM.vm_uuid == body.vm_uuid))).scalars())
            if not hosts:
                raise errors.VMNotFound(f"virtual machine {body.vm_uuid} does not exist")
            if len(hosts) > 1:
                raise errors.BadRequest(f"several hosts have a VM {body.vm_uuid}: give hs_name")
            hs_name = hosts[0]
        vm = await get_vm(s, ctx.user, hs_name, body.vm_uuid)
        vm_id = vm.id
    await traffic.reset_period(ctx.core, vm_id)
    await ctx.core.audit(ctx.user, "vm.traffic-reset", f"{hs_name}/{body.vm_uuid}", source_ip=ctx.source_ip)
    return {"vm_uuid": body.vm_uuid, "server_name": hs_name, "traffic_bytes": 0}
