"""Routes of the billing modules' dialect that API.md lacks: one-VM tokens and traffic reset.

(The dialect's other additions live with their areas: ``/api/system/statis`` in system,
plans and ports in hosts, NAT/proxy checks in network.)
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from starlette.responses import RedirectResponse

from idcs_core import errors
from idcs_core.api.routing import ADMIN, PUBLIC, Ctx, Router
from idcs_core.api.schemas import TrafficReset
from idcs_core.services import billing_links

router = Router("compat")


@router.get("/api/client/temptoken/{hs_name}/{vm_uuid}", auth=ADMIN, data={"type": "object", "properties": {
    "temp_token": {"type": "string"}, "expire": {"type": "integer", "description": "epoch seconds"}}})
async def temp_token(ctx: Ctx, hs_name: str, vm_uuid: str) -> Any:
    """A short-lived token valid for this one VM only (the customer's "open panel" link).

    Lifetime: setting ``temp_token_ttl_seconds``. Exchange it with ``/api/client/templogin``,
    or send it as a bearer token directly: either way it reaches this VM and nothing else."""
    issued = await billing_links.issue_temp_token(ctx.core, ctx.user, hs_name, vm_uuid, ctx.source_ip)
    return {"temp_token": issued.token, "expire": issued.expire}


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
    session = await billing_links.exchange_temp_token(ctx.core, raw, ctx.source_ip)
    fragment = urlencode({"temp": session.token, "hs": session.server_name, "vm": session.vm_uuid})
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
    hs_name = await billing_links.reset_traffic(ctx.core, ctx.user, body.hs_name, body.vm_uuid, ctx.source_ip)
    return {"vm_uuid": body.vm_uuid, "server_name": hs_name, "traffic_bytes": 0}
