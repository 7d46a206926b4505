"""System figures, audit log, settings, engines and plugins."""

from __future__ import annotations

from typing import Any

from idcs_core import errors
from idcs_core.api.presenters import system as present
from idcs_core.api.presenters import users as present_users
from idcs_core.api.routing import ADMIN, PUBLIC, USER, Ctx, Router
from idcs_core.api.schemas import Empty, LimitQuery, SettingsBody
from idcs_core.cluster.status import CLUSTER_SCHEMA, STATS_MAX_AGE, cluster_status
from idcs_core.services import audit, system, users
from idcs_core.services.hosts import list_hosts

router = Router("system")

STATS_FIELDS: dict[str, Any] = {
    k: {"type": "integer"} for k in ("hosts_count", "hosts_online", "vms_count", "running_vm_count", "users_count")
} | {k: {"type": "number", "description": "percent"} for k in ("cpu_usage", "memory_usage", "disk_usage")}
STATS_DATA = {"type": "object", "properties": STATS_FIELDS}


STATS_WITH_CLUSTER: dict[str, Any] = {"type": "object",
                                      "properties": STATS_FIELDS | {"cluster": CLUSTER_SCHEMA}}


@router.get("/api/system/stats", auth=ADMIN, data=STATS_WITH_CLUSTER)
async def stats(ctx: Ctx) -> Any:
    """Counts, average usage and the cluster (nodes, task queue).

    Usage is that of the online hosts, else of this server. ``cluster``: the nodes on this database
    (alive: a heartbeat within 10 s), whether the answering node leads the periodic work, and the
    task queue (waiting and running jobs, oldest waiting job, live workers)."""
    cluster = await cluster_status(ctx.core, max_age=STATS_MAX_AGE)  # figures of the last second
    return present.stats(await system.stats(ctx.core)) | {"cluster": cluster}


@router.get("/api/system/statis", auth=ADMIN, alias_of="/api/system/stats", data=STATS_DATA)
async def statis(ctx: Ctx) -> Any:
    """System stats (billing dialect spelling; carries running_vm_count)."""
    return present.stats(await system.stats(ctx.core))


@router.get("/api/system/logger/detail", auth=ADMIN, body=LimitQuery, query={"limit": "integer 1-1000, default 100"})
async def logger_detail(ctx: Ctx, body: LimitQuery) -> Any:
    """The latest audit log entries: who did what, when, with what result."""
    return present.audit_entries(await audit.latest(ctx.core, body.limit))


@router.get("/api/system/settings", auth=ADMIN)
async def get_settings(ctx: Ctx) -> Any:
    """Runtime settings and what each means."""
    return {"settings": ctx.core.settings.public(), "schema": ctx.core.settings.describe()}


@router.post("/api/system/settings", auth=ADMIN, body=SettingsBody)
async def set_settings(ctx: Ctx, body: SettingsBody) -> Any:
    """Change settings: a JSON object of setting name to value. All or nothing."""
    changes = body.model_extra or {}
    if not changes:
        raise errors.BadRequest("give at least one setting")
    return {"settings": await ctx.core.settings.update(changes, by=ctx.user)}


@router.get("/api/system/engine", auth=USER)
async def engines(ctx: Ctx) -> Any:
    """The engine type names installed on this server."""
    return sorted(ctx.core.plugins.engines)


@router.get("/api/system/engine/detail", auth=ADMIN)
async def engine_detail(ctx: Ctx) -> Any:
    """Each installed engine with its version, capabilities and host options (name, type, default,
    help, secret, required, choices; ``options_typed`` false for an engine of the first contract)."""
    return [present.engine(e, ctx.core.engine_options(e.name)) for e in ctx.core.plugins.engines.values()]


@router.get("/api/system/plugins", auth=ADMIN)
async def plugins(ctx: Ctx) -> Any:
    """Every plugin, loaded or not: name, kind, version, hooks, and the load error if any."""
    return ctx.core.plugins.describe()


@router.post("/api/system/recalculate-quotas", auth=ADMIN, body=Empty)
async def recalculate_quotas(ctx: Ctx, body: Empty) -> Any:
    """Recount every user's used quota from what actually exists."""
    return present_users.recounted(await users.recalculate_quotas(ctx.core, by=ctx.user))


@router.get("/api/server/status", auth=ADMIN)
async def overall_status(ctx: Ctx) -> Any:
    """Overall health (billing dialect's connection test): server up, hosts online/offline."""
    return present.overall_status(await list_hosts(ctx.core))


@router.get("/health", auth=PUBLIC)
async def health(ctx: Ctx) -> Any:
    """Liveness probe (no authentication)."""
    return {"status": "ok"}
