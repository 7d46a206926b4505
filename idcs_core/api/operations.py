"""Operations: webhooks with their delivery log, and live events (Server-Sent Events)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field
from starlette.responses import Response, StreamingResponse

from idcs_core import errors
from idcs_core.api.routing import ADMIN, PUBLIC, USER, Ctx, Router
from idcs_core.api.schemas import Body, Empty, LimitQuery
from idcs_core.ops import metrics, schedules, traffic, webhooks
from idcs_core.ops.listener import EVENT_NAMES
from idcs_core.services.lookup import get_vm
from idcs_core.validation import Text

router = Router("operations")

WEBHOOK_DATA = {"type": "object", "properties": {
    "id": {"type": "integer"}, "url": {"type": "string"}, "description": {"type": "string"},
    "events": {"type": "array", "items": {"type": "string", "enum": list(EVENT_NAMES)},
               "description": "events sent; empty: every event"},
    "secret": {"type": "string", "description": "HMAC-SHA256 signing secret: only in the answer to the creation"},
    "created_at": {"type": "string", "format": "date-time"}}}


class WebhookCreate(Body):
    url: Annotated[str, Field(min_length=1, max_length=2000)]
    events: Annotated[list[Annotated[str, Field(max_length=64)]], Field(max_length=len(EVENT_NAMES))] = []
    description: Text = ""


class ScheduleCreate(Body):
    cron: Annotated[str, Field(min_length=1, max_length=100)]
    retention: Annotated[int, Field(ge=1, le=schedules.MAX_RETENTION)]
    enabled: bool = True


class TrafficQuery(Body):
    days: Annotated[int, Field(ge=1, le=400)] = traffic.DAYS_SHOWN


TRAFFIC_DAY = {"type": "object", "properties": {
    "day": {"type": "string", "format": "date"}, "rx_bytes": {"type": "integer"}, "tx_bytes": {"type": "integer"},
    "total_bytes": {"type": "integer"}}}
TRAFFIC_USED = {"type": "object", "properties": {
    "period_start": {"type": "string", "format": "date-time",
                     "description": "start of the period: the 1st of the month (UTC) or the last reset"},
    "rx_bytes": {"type": "integer", "description": "received by the VM this period"},
    "tx_bytes": {"type": "integer", "description": "sent by the VM this period"},
    "used_bytes": {"type": "integer", "description": "what counts against flu_num (setting traffic_count)"},
    "count": {"type": "string", "enum": ["both", "out", "in"]},
    "limit_bytes": {"type": "integer", "nullable": True, "description": "flu_num GiB in bytes; null: no limit"},
    "over_action": {"type": "string", "description": "'' while under flu_num; else what was done: none, "
                    "throttle, suspend"},
    "sampled_at": {"type": "string", "format": "date-time", "nullable": True},
    "days": {"type": "array", "items": TRAFFIC_DAY, "description": "daily totals, oldest first"},
    "months": {"type": "array", "description": "calendar-month totals (UTC), oldest first, last 12",
               "items": {"type": "object", "properties": {"month": {"type": "string", "example": "2026-12"},
                                                          "rx_bytes": {"type": "integer"},
                                                          "tx_bytes": {"type": "integer"},
                                                          "total_bytes": {"type": "integer"}}}}}}


def _id(name: str, value: str) -> int:
    if not value.isdigit() or len(value) > 9:
        raise errors.BadRequest(f"{name}: a positive integer is needed")
    return int(value)


def _webhook_id(value: str) -> int:
    return _id("webhook_id", value)


@router.post("/api/webhooks", auth=ADMIN, body=WebhookCreate, data=WEBHOOK_DATA)
async def create_webhook(ctx: Ctx, body: WebhookCreate) -> Any:
    """Subscribe a URL to events; the answer shows its signing secret once.

    Each event is POSTed as JSON ``{"id", "event", "time", "data"}`` with the headers
    ``X-IDCS-Event``, ``X-IDCS-Event-Id`` (the same on retries: handle each id once),
    ``X-IDCS-Delivery``, ``X-IDCS-Attempt``, ``X-IDCS-Timestamp`` (unix seconds) and
    ``X-IDCS-Signature: v1=<hex HMAC-SHA256(secret, timestamp + "." + raw body)>``. Verify the
    signature in constant time and refuse a timestamp more than 300 s from your clock. Any answer
    other than 2xx (or none within ``webhook_timeout_seconds``) is retried after
    ``webhook_backoff_seconds`` x 2^(try-1), up to ``webhook_max_attempts`` tries. Events carry
    no secrets.
    """
    return await webhooks.create_webhook(ctx.core, ctx.user, body.url, body.events, body.description)


@router.get("/api/webhooks", auth=ADMIN)
async def list_webhooks(ctx: Ctx) -> Any:
    """Every webhook (without its secret)."""
    return await webhooks.list_webhooks(ctx.core)


@router.delete("/api/webhooks/{webhook_id}", auth=ADMIN, body=Empty)
async def delete_webhook(ctx: Ctx, webhook_id: str, body: Empty) -> Any:
    """Delete a webhook and its delivery log; tries still pending stop."""
    await webhooks.delete_webhook(ctx.core, ctx.user, _webhook_id(webhook_id))
    return None


@router.get("/api/webhooks/{webhook_id}/deliveries", auth=ADMIN, body=LimitQuery,
            query={"limit": "integer 1-1000, default 100"})
async def list_deliveries(ctx: Ctx, webhook_id: str, body: LimitQuery) -> Any:
    """The webhook's delivery log, newest first: event, state (pending / success / failed), tries,
    last HTTP status or error, next try."""
    return await webhooks.list_deliveries(ctx.core, _webhook_id(webhook_id), body.limit)


@router.get("/api/events", auth=USER)
async def events(ctx: Ctx) -> Any:
    """Live events as Server-Sent Events (``text/event-stream``, not the JSON envelope).

    Messages: ``task_progress`` (a running task's id, kind, target, state, progress, message,
    whenever they change) and one per event hook (``vm_created``, ``vm_deleted``, ``vm_powered``,
    ``task_finished``, ...; data ``{"id", "event", "time", "data"}`` as sent to webhooks). A user
    sees only their own VMs and tasks; admins see everything, including ``host_changed``. A
    comment line is sent every 15 s to keep proxies from closing the stream; then the login is
    checked again, and a stream whose login ended (logout, expiry) gets an ``end`` message and closes.
    """
    header = ctx.request.headers.get("authorization")

    async def still_valid() -> bool:
        try:
            await ctx.core.auth.authenticate(header)
        except errors.IDCSError:
            return False
        return True

    return StreamingResponse(ctx.core.ops.live.stream(ctx.user, still_valid), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


@router.get("/metrics", auth=PUBLIC)
async def prometheus_metrics(ctx: Ctx) -> Any:
    """Prometheus metrics (text exposition format, not the JSON envelope).

    Allowed from the addresses in the ``metrics_allow`` setting (CIDRs; default loopback only; behind
    a reverse proxy that is the proxy's address) or with ``Authorization: Bearer <metrics_token>``;
    otherwise 403. Series: request counts and latencies by route template, task counts and
    durations by kind and outcome, engine hook latencies by engine and hook, host up/down, VMs by
    state, and per VM its traffic this period and its CPU / memory use where the host reports them.
    See ``idcs_core/ops/metrics.py``.
    """
    metrics.check_access(ctx.core, ctx.source_ip, ctx.request.headers.get("authorization"))
    return Response(await ctx.core.ops.metrics.render(), media_type=metrics.CONTENT_TYPE)


SCHEDULE = "/api/client/backup/schedule/{hs_name}/{vm_uuid}"


@router.get(SCHEDULE, vm_scoped=True)
async def list_backup_schedules(ctx: Ctx, hs_name: str, vm_uuid: str) -> Any:
    """The VM's backup schedules: cron, retention, next and last run, last state and error."""
    return await schedules.list_schedules(ctx.core, ctx.user, hs_name, vm_uuid)


@router.post(SCHEDULE, body=ScheduleCreate, vm_scoped=True)
async def create_backup_schedule(ctx: Ctx, hs_name: str, vm_uuid: str, body: ScheduleCreate) -> Any:
    """Back the VM up on a cron schedule (UTC), keeping its newest ``retention`` scheduled backups.

    ``cron``: five fields (minute hour day month weekday), ``@hourly`` / ``@daily`` / ``@weekly`` /
    ``@monthly``, or six fields with seconds last. Each run is a ``backup_scheduled`` task of the
    VM's owner (counted in their ``max_backups``); afterwards the schedule's oldest backups beyond
    ``retention`` are deleted (manual backups never are). A run missed while the server was down
    is made once when it is back. A failure fails the task (event ``task_finished``) and shows in
    ``last_state`` / ``last_error``.
    """
    return await schedules.create_schedule(ctx.core, ctx.user, hs_name, vm_uuid, body.cron, body.retention,
                                           body.enabled)


@router.delete(SCHEDULE + "/{schedule_id}", body=Empty, vm_scoped=True)
async def delete_backup_schedule(ctx: Ctx, hs_name: str, vm_uuid: str, schedule_id: str, body: Empty) -> Any:
    """Stop a backup schedule; the backups it made stay."""
    await schedules.delete_schedule(ctx.core, ctx.user, hs_name, vm_uuid, _id("schedule_id", schedule_id))
    return None


@router.get("/api/client/traffic/{hs_name}/{vm_uuid}", body=TrafficQuery, vm_scoped=True, data=TRAFFIC_USED,
            query={"days": "days of daily totals (1-400, default 31)"})
async def vm_traffic(ctx: Ctx, hs_name: str, vm_uuid: str, body: TrafficQuery) -> Any:
    """The VM's traffic: this period (month or since the last reset), by day and by month.

    Also in the VM's detail as ``traffic_used``. Counted from the engine's counters every
    ``traffic_sample_seconds`` (engines with the ``traffic`` capability); a restart of the VM is
    neither lost nor counted twice. ``used_bytes`` (setting ``traffic_count``) is what counts
    against ``flu_num``; past it, setting ``traffic_over_action`` decides what happens.
    """
    async with ctx.core.db.session() as s:
        vm = await get_vm(s, ctx.user, hs_name, vm_uuid)
        vm_id, config = vm.id, dict(vm.config or {})
    return await traffic.usage_of(ctx.core, vm_id, config, body.days)


@router.post("/api/traffic/sample", auth=ADMIN, body=Empty, data={"type": "object", "properties": {
    "vms": {"type": "integer", "description": "VMs whose counters were read"}}})
async def traffic_sample(ctx: Ctx, body: Empty) -> Any:
    """Read every host's traffic counters now (as the ``traffic_sample_seconds`` loop does) and
    answer when they are counted."""
    return {"vms": await ctx.core.ops.traffic.sample_all()}


HOST_SCHEDULE = "/api/server/backup/schedule/{hs_name}"


@router.get(HOST_SCHEDULE, auth=ADMIN)
async def list_host_backup_schedules(ctx: Ctx, hs_name: str) -> Any:
    """The host's backup schedules (each backs up every VM on the host)."""
    return await schedules.list_host_schedules(ctx.core, hs_name)


@router.post(HOST_SCHEDULE, auth=ADMIN, body=ScheduleCreate)
async def create_host_backup_schedule(ctx: Ctx, hs_name: str, body: ScheduleCreate) -> Any:
    """Back up every VM of the host on a cron schedule (UTC), keeping each VM's newest ``retention``
    backups of this schedule.

    Each slot starts one ``backup_scheduled`` task per VM on the host then (busy VMs are skipped),
    with the same rules as a VM's schedule (``/api/client/backup/schedule/...``): counted in each
    owner's ``max_backups``, oldest beyond ``retention`` deleted, a failure fails that VM's task
    (event ``task_finished``, state ``failed``) and shows in ``last_state`` / ``last_error``.
    """
    return await schedules.create_host_schedule(ctx.core, ctx.user, hs_name, body.cron, body.retention,
                                                body.enabled)


@router.delete(HOST_SCHEDULE + "/{schedule_id}", auth=ADMIN, body=Empty)
async def delete_host_backup_schedule(ctx: Ctx, hs_name: str, schedule_id: str, body: Empty) -> Any:
    """Stop a host's backup schedule; the backups it made stay."""
    await schedules.delete_host_schedule(ctx.core, ctx.user, hs_name, _id("schedule_id", schedule_id))
    return None
