"""Helpers shared by the route modules."""

from __future__ import annotations

from typing import Any

from idcs_core import errors
from idcs_core.api.routing import Ctx, profile_wait, wait_param

# Requests authenticated with an API token come from billing automation, which expects an
# operation to be done when the call returns: unless the call says otherwise (``?wait=0``),
# it waits for its task up to its profile's ``wait_seconds`` (300 s for ``openidcs``); a
# task still running then answers with its state (a create: status ``creating``).


def wait_seconds(ctx: Ctx) -> float:
    """The validated ``?wait=`` of this request (the router checks it before the handler runs)."""
    if ctx.wait is not None:
        return ctx.wait
    return wait_param(ctx.query, profile_wait(ctx.principal))


async def finish(ctx: Ctx, started: dict[str, Any]) -> dict[str, Any]:
    """Wait for the task of ``started`` if the caller asked to; a failed task becomes its error."""
    seconds = wait_seconds(ctx)
    if seconds <= 0:
        return started
    task = await ctx.core.tasks.wait(started["task_id"], seconds)
    if task["state"] == "failed":
        code = int((task.get("result") or {}).get("code", 1005))
        exc = errors.IDCSError(task["message"], data={"task": task})
        exc.code = code
        exc.http_status = errors.BUSINESS_CODES.get(code, (500, ""))[0]
        raise exc
    return started | {"task": task, "status": (task.get("result") or {}).get("status", started.get("status"))}


def base_url(ctx: Ctx) -> str:
    configured = ctx.core.config.public_url
    if configured:
        return configured.rstrip("/")
    return str(ctx.request.base_url).rstrip("/")
