"""What ``idcs cluster status`` prints and ``GET /api/system/stats`` shows administrators as ``cluster``."""

from __future__ import annotations

import asyncio
import time
import weakref
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from idcs_core.cluster.nodes import DEAD_AFTER
from idcs_core.db.models import ClusterNode, utcnow

if TYPE_CHECKING:
    from idcs_core.context import CoreContext

CLUSTER_SCHEMA: dict[str, Any] = {"type": "object", "description": "nodes and task queue (administrators)",
                                  "properties": {
    "nodes": {"type": "array", "items": {"type": "object", "properties": {
        "name": {"type": "string"}, "hostname": {"type": "string"}, "pid": {"type": "integer"},
        "role": {"type": "string", "description": "api, worker or api+worker"},
        "started_at": {"type": "string"}, "last_seen": {"type": "string"},
        "alive": {"type": "boolean", "description": f"a heartbeat within {DEAD_AFTER:g} s"}}}},
    "nodes_alive": {"type": "integer"},
    "leader": {"type": "boolean", "description": "whether the node that answered leads the periodic work"},
    "queue": {"type": "object", "properties": {
        "backend": {"type": "string", "description": "procrastinate or in-process"},
        "waiting": {"type": "integer"}, "running": {"type": "integer"},
        "oldest_waiting_seconds": {"type": ["number", "null"]}, "workers": {"type": "integer"}}},
}}


# What each core answered last, and when (monotonic): ``/api/system/stats`` is a cheap read asked
# many times a second, and nodes' heartbeats move every few seconds, so it may answer from a second
# ago. Once that is older than ``max_age``, ONE read refreshes it and every caller that comes
# meanwhile waits for that read (64 requests at once must not each queue for the database).
_LAST: weakref.WeakKeyDictionary[CoreContext, tuple[float, dict[str, Any]]] = weakref.WeakKeyDictionary()
_REFRESHING: weakref.WeakKeyDictionary[CoreContext, asyncio.Task[dict[str, Any]]] = weakref.WeakKeyDictionary()
STATS_MAX_AGE = 1.0  # seconds


async def cluster_status(core: CoreContext, max_age: float = 0.0) -> dict[str, Any]:
    """The nodes and the task queue, read now, or as read at most about ``max_age`` seconds ago."""
    last = _LAST.get(core)
    if last is not None and time.monotonic() - last[0] < max_age:
        return last[1]
    refresh = _REFRESHING.get(core)
    if refresh is None or refresh.done():
        refresh = _REFRESHING[core] = asyncio.ensure_future(_refresh(core))
    return await asyncio.shield(refresh)


async def _refresh(core: CoreContext) -> dict[str, Any]:
    status = await _read_status(core)
    _LAST[core] = (time.monotonic(), status)
    return status


async def _read_status(core: CoreContext) -> dict[str, Any]:
    now = utcnow()
    async with core.db.session() as s:
        rows = list((await s.execute(select(ClusterNode).order_by(ClusterNode.started_at))).scalars())
    nodes = [{"name": n.name, "hostname": n.hostname, "pid": n.pid, "role": n.role,
              "started_at": n.started_at.isoformat(), "last_seen": n.last_seen.isoformat(),
              "alive": (now - n.last_seen).total_seconds() <= DEAD_AFTER} for n in rows]
    return {"nodes": nodes, "nodes_alive": sum(1 for n in nodes if n["alive"]),
            "leader": core.leader.leads(), "queue": (await core.tasks.stats()).as_dict()}


def render(status: dict[str, Any]) -> str:
    """The text ``idcs cluster status`` prints."""
    q = status["queue"]
    oldest = "-" if q["oldest_waiting_seconds"] is None else f"{q['oldest_waiting_seconds']:.1f} s"
    lines = [f"nodes: {status['nodes_alive']} alive of {len(status['nodes'])}",
             f"{'NAME':<36} {'ROLE':<11} {'HOST':<20} {'PID':>7}  {'STATE':<5}  LAST SEEN"]
    for n in status["nodes"]:
        lines.append(f"{n['name']:<36} {n['role']:<11} {n['hostname']:<20} {n['pid']:>7}  "
                     f"{'alive' if n['alive'] else 'DEAD':<5}  {n['last_seen']}")
    lines.append(f"queue ({q['backend']}): {q['waiting']} waiting, {q['running']} running, "
                 f"oldest waiting {oldest}; workers alive: {q['workers']}")
    return "\n".join(lines)
