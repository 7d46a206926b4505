"""Long operations: look at their state and progress."""

from __future__ import annotations

from typing import Any

from idcs_core import tasks
from idcs_core.api.routing import USER, Ctx, Router
from idcs_core.api.schemas import LimitQuery, WaitQuery

router = Router("tasks")


@router.get("/api/tasks", auth=USER, body=LimitQuery, query={"limit": "default 100", "state": "filter"})
async def list_tasks(ctx: Ctx, body: LimitQuery) -> Any:
    """Recent tasks (yours; admins see all), newest first."""
    return await tasks.list_tasks(ctx.core, ctx.user, body.limit, body.state)


@router.get("/api/tasks/{task_id}", auth=USER, body=WaitQuery, query={"wait": "seconds to wait for the end"})
async def get_task(ctx: Ctx, task_id: str, body: WaitQuery) -> Any:
    """One task: kind, target, state (pending / running / success / failed), progress, message."""
    task = await tasks.get_task(ctx.core, ctx.user, task_id)
    if body.wait:  # also when it has just ended: its events (the audit entry) are then delivered
        task = await ctx.core.tasks.wait(task_id, body.wait)
    return task
