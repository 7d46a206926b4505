"""Prometheus metrics of one server (``GET /metrics``, the ``prometheus-client`` library).

- ``idcs_http_requests_total{method,route,status}`` and ``idcs_http_request_duration_seconds{method,route}``:
  ``route`` is the route's template (``/api/client/detail/{hs_name}``), never the raw path, so the
  number of series stays fixed; a request that matches no route counts as ``unmatched``.
- ``idcs_tasks_total{kind,outcome}`` and ``idcs_task_duration_seconds{kind,outcome}`` (from the
  ``task_finished`` event), ``idcs_tasks_active{kind}``.
- ``idcs_engine_hook_duration_seconds{engine,hook,outcome}``: every engine hook call.
- ``idcs_host_up{host,engine}`` (1 online, 0 offline) and ``idcs_vms{state}``: read when scraped.
- ``idcs_vm_traffic_bytes{host,vm,direction}``: bytes a managed VM received (``rx``) and sent (``tx``)
  this traffic period (``ops.traffic``), for hosts whose engine reports traffic.
- ``idcs_vm_cpu_usage_percent{host,vm}`` and ``idcs_vm_memory_usage_percent{host,vm}``: from one
  ``vm_list`` per online host at scrape time, for managed VMs whose engine reports them.

Each server has its own ``CollectorRegistry`` (tests run several servers in one process). The
per-request cost is two dict look-ups, a clock read and two increments.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from sqlalchemy import func, select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from idcs_core import errors
from idcs_core.db.models import VM, Host, Task, VMTraffic
from idcs_core.ops.listener import Event, EventListener
from idcs_core.security import constant_time_equal
from idcs_core.tasks import ACTIVE_STATES

if TYPE_CHECKING:
    from idcs_core.context import CoreContext

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
TASK_BUCKETS = (0.1, 0.5, 1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600)
UNMATCHED = "unmatched"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})  # others count as OTHER


class Metrics(EventListener):
    """The collectors of one server; an event plugin for the task metrics."""

    def __init__(self, core: CoreContext, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.core = core
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.requests = Counter("idcs_http_requests", "HTTP requests answered", ["method", "route", "status"],
                                registry=r)
        self.request_seconds = Histogram("idcs_http_request_duration_seconds", "Time to answer an HTTP request",
                                         ["method", "route"], buckets=LATENCY_BUCKETS, registry=r)
        self.tasks = Counter("idcs_tasks", "Long operations that ended", ["kind", "outcome"], registry=r)
        self.task_seconds = Histogram("idcs_task_duration_seconds", "Time from a task's creation to its end",
                                      ["kind", "outcome"], buckets=TASK_BUCKETS, registry=r)
        self.tasks_active = Gauge("idcs_tasks_active", "Tasks pending or running", ["kind"], registry=r)
        self.hook_seconds = Histogram("idcs_engine_hook_duration_seconds", "Time of one engine hook call",
                                      ["engine", "hook", "outcome"], buckets=LATENCY_BUCKETS, registry=r)
        self.host_up = Gauge("idcs_host_up", "1 when the host answers its status call, else 0",
                             ["host", "engine"], registry=r)
        self.vms = Gauge("idcs_vms", "Managed VMs by recorded state", ["state"], registry=r)
        self.vm_traffic = Gauge("idcs_vm_traffic_bytes", "Bytes a VM moved this traffic period",
                                ["host", "vm", "direction"], registry=r)
        self.vm_cpu = Gauge("idcs_vm_cpu_usage_percent", "A VM's CPU use as its host reports it",
                            ["host", "vm"], registry=r)
        self.vm_memory = Gauge("idcs_vm_memory_usage_percent", "A VM's memory use as its host reports it",
                               ["host", "vm"], registry=r)
        self._request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    # -- recording
    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        children = self._request_children.get(key)
        if children is None:
            children = (self.requests.labels(method, route, str(status)), self.request_seconds.labels(method, route))
            self._request_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def observe_hook(self, engine: str, hook: str, ok: bool, seconds: float) -> None:
        self.hook_seconds.labels(engine, hook, "ok" if ok else "error").observe(seconds)

    async def on_event(self, event: Event) -> None:
        if event.name != "task_finished":
            return
        task = event.data.get("task") or {}
        kind, outcome = str(task.get("kind", "unknown")), str(task.get("state", "unknown"))
        self.tasks.labels(kind, outcome).inc()
        started, ended = _instant(task.get("created_at")), _instant(task.get("finished_at"))
        if started is not None and ended is not None:
            self.task_seconds.labels(kind, outcome).observe(max(0.0, (ended - started).total_seconds()))

    # -- scraping
    async def render(self) -> bytes:
        """The text exposition, after reading the gauges that come from the database and hosts."""
        async with self.core.db.session() as s:
            hosts = list((await s.execute(select(Host))).scalars())
            by_state = dict((await s.execute(select(VM.status, func.count()).group_by(VM.status))).all())
            active = dict((await s.execute(select(Task.kind, func.count()).where(Task.state.in_(ACTIVE_STATES))
                                           .group_by(Task.kind))).all())
            traffic = (await s.execute(select(Host.server_name, VM.vm_uuid, VMTraffic.period_rx, VMTraffic.period_tx)
                                       .join(VM, VM.id == VMTraffic.vm_id).join(Host, Host.id == VM.host_id))).all()
            managed = {(h, v) for h, v in (await s.execute(select(Host.server_name, VM.vm_uuid)
                                                           .join(VM, VM.host_id == Host.id))).all()}
        statuses = await self.core.hosts.status_many(hosts)
        self.host_up.clear()
        for host, (status, _error) in zip(hosts, statuses, strict=True):
            self.host_up.labels(host.server_name, host.server_type).set(1 if status is not None else 0)
        self.vm_traffic.clear()
        for hs_name, vm_uuid, rx, tx in traffic:
            self.vm_traffic.labels(hs_name, vm_uuid, "rx").set(rx)
            self.vm_traffic.labels(hs_name, vm_uuid, "tx").set(tx)
        online = [h for h, (status, _e) in zip(hosts, statuses, strict=True)
                  if status is not None and self.core.supports(h, "vm_list")]
        lists = await asyncio.gather(*(self.core.engines.vm_list(h) for h in online), return_exceptions=True)
        self.vm_cpu.clear()
        self.vm_memory.clear()
        for host, listed in zip(online, lists, strict=True):
            if isinstance(listed, BaseException):
                continue
            for info in listed or []:
                if (host.server_name, info.vm_uuid) not in managed:
                    continue
                if info.cpu_usage is not None:
                    self.vm_cpu.labels(host.server_name, info.vm_uuid).set(info.cpu_usage)
                if info.memory_usage is not None:
                    self.vm_memory.labels(host.server_name, info.vm_uuid).set(info.memory_usage)
        self.vms.clear()
        for state in ("running", "stopped", "paused", "creating", "deleting", *by_state):
            self.vms.labels(state or "unknown").set(by_state.get(state, 0))
        self.tasks_active.clear()
        for kind, count in active.items():
            self.tasks_active.labels(kind).set(count)
        return generate_latest(self.registry)


CONTENT_TYPE = CONTENT_TYPE_LATEST


def check_access(core: CoreContext, client_ip: str, authorization: str | None) -> None:
    """Let the scrape through when its address is in ``metrics_allow`` or it brings ``metrics_token``."""
    token = str(core.settings.get("metrics_token"))
    if token and authorization and authorization.startswith("Bearer ") \
            and constant_time_equal(authorization[7:].strip(), token):
        return
    allow = str(core.settings.get("metrics_allow"))
    try:
        address = ipaddress.ip_address(client_ip)
    except ValueError:
        address = None
    if address is not None and any(address in ipaddress.ip_network(n) for n in allow.split(",") if n):
        return
    raise errors.Forbidden("metrics: this address is not in metrics_allow and no valid metrics token was given")


class MetricsMiddleware:
    """Times every HTTP request and counts it by route template and status."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            core = getattr(scope["app"].state, "core", None) if "app" in scope else None
            ops = getattr(core, "ops", None) if core is not None else None
            if ops is not None:
                route = getattr(scope.get("route"), "path", None) or UNMATCHED
                method = scope["method"] if scope["method"] in METHODS else "OTHER"
                ops.metrics.observe_request(method, route, status, time.perf_counter() - started)


def _instant(value: object) -> datetime | None:
    """A task time as events carry it: ISO 8601 text (events are stored in the task's outbox as JSON)."""
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None
    return None
