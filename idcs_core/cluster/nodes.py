"""The nodes registry: one ``cluster_nodes`` row per running ``idcs serve`` / ``idcs worker``.

A node writes its row at start, renews ``last_seen`` every ``HEARTBEAT_SECONDS`` and deletes
it at a clean stop. A node is dead when its row is older than ``DEAD_AFTER`` seconds, or —
on the same machine, known at once — when its pid no longer runs (``forget_dead_local_workers``
then also removes its procrastinate worker, so its jobs are queued again without waiting
for the heartbeat to age).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from datetime import timedelta
from typing import TYPE_CHECKING

import psutil
from sqlalchemy import delete, select, text, update

from idcs_core.db.models import ClusterNode, utcnow

if TYPE_CHECKING:
    from idcs_core.context import CoreContext

log = logging.getLogger("idcs.cluster")

HEARTBEAT_SECONDS = float(os.environ.get("IDCS_NODE_HEARTBEAT", "2"))
DEAD_AFTER = 5 * HEARTBEAT_SECONDS
FORGET_AFTER = 24 * 3600.0  # rows of dead nodes are removed after this long (shown as dead meanwhile)


def process_started(pid: int) -> float:
    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return 0.0


def default_name(role: str) -> str:
    return f"{socket.gethostname()}-{role.split('+')[0]}-{os.getpid()}"


class NodeRegistry:
    """This process's row in ``cluster_nodes`` and the loop that keeps it fresh."""

    def __init__(self, core: CoreContext, role: str, name: str | None = None) -> None:
        self.core = core
        self.role = role
        self.name = name or default_name(role)
        self._loop: asyncio.Task[None] | None = None

    async def start(self, worker_id: int | None = None, queue: bool = False) -> None:
        """Write this node's row (replacing one of the same name: a node started again). A dead node
        of this machine is forgotten first, so a worker restarted under its old name does not hide
        that its predecessor died (``queue``: its procrastinate worker goes too)."""
        now = utcnow()
        pid = os.getpid()
        await forget_dead_local_workers(self.core, queue)
        async with self.core.db.session() as s:
            await s.execute(delete(ClusterNode).where(ClusterNode.name == self.name))
            s.add(ClusterNode(name=self.name, hostname=socket.gethostname(), pid=pid, pid_started=process_started(pid),
                              role=self.role, worker_id=worker_id, started_at=now, last_seen=now))
        self._loop = asyncio.create_task(self._beat(), name="idcs-node-heartbeat")

    async def set_worker(self, worker_id: int | None) -> None:
        async with self.core.db.session() as s:
            await s.execute(update(ClusterNode).where(ClusterNode.name == self.name).values(worker_id=worker_id))

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            try:
                # on the engine, not in a tracked session: a heartbeat is no change of the data the
                # read cache holds (a session's write would drop that cache every beat)
                async with self.core.db.engine.begin() as conn:
                    await conn.execute(update(ClusterNode).where(ClusterNode.name == self.name)
                                       .values(last_seen=utcnow()))
                    await conn.execute(delete(ClusterNode).where(
                        ClusterNode.last_seen < utcnow() - timedelta(seconds=FORGET_AFTER)))
            except Exception:  # the database away for a moment: next beat
                log.warning("node heartbeat not written", exc_info=True)

    async def stop(self) -> None:
        if self._loop is not None:
            self._loop.cancel()
        try:
            async with self.core.db.session() as s:
                await s.execute(delete(ClusterNode).where(ClusterNode.name == self.name))
        except Exception:  # a database that is gone must not stop the shut-down
            log.warning("could not remove node %s from the registry", self.name, exc_info=True)


def alive_here(node: ClusterNode) -> bool:
    """Whether ``node`` (a row of this machine) still runs: same pid, same process start time."""
    started = process_started(node.pid)
    return started > 0 and (not node.pid_started or abs(started - node.pid_started) < 1.0)


async def forget_dead_local_workers(core: CoreContext, queue: bool) -> list[str]:
    """Remove the rows (and, with ``queue``, procrastinate workers) of nodes of this machine whose
    process is gone; return their names. Their running jobs are then those of a dead worker
    (``QueueTaskRunner.sweep``)."""
    host = socket.gethostname()
    async with core.db.session() as s:
        rows = list((await s.execute(select(ClusterNode).where(ClusterNode.hostname == host))).scalars())
        dead = [n for n in rows if not alive_here(n)]
        for node in dead:
            if node.worker_id is not None and queue:
                await s.execute(text("DELETE FROM procrastinate_workers WHERE id = :id"), {"id": node.worker_id})
            await s.delete(node)
    for node in dead:
        log.warning("node %s (pid %d) is gone: its running jobs are queued again", node.name, node.pid)
    return [n.name for n in dead]
