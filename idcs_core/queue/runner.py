"""Tasks as procrastinate jobs: any node's worker (or ``idcs worker``) runs them.

The ``Task`` row stays the record users see; the job carries only the task id. A job
runs the task's handler exactly as the in-process runner does (same progress, same
one-transaction ending, same outbox) — ``QueueTaskRunner`` inherits that part — and
the caller that waits for a result (``run``, ``wait``) watches the row, bounded by the
timeout.

Cluster-wide rules:
- **Serialisation**: every job of one (host, VM) carries the procrastinate ``lock``
  ``idcs:<host>/<vm>``: no two run at once anywhere, and they run in the order queued.
- **busy(host, vm)**: a task of the VM is pending or running in the database (a snapshot
  renewed every ``BUSY_REFRESH`` s and whenever this node sees a task end, plus the tasks this
  node just added). The lock above is what keeps two changes apart; ``busy`` is the early 409.
- **Connections**: procrastinate's pool (up to 3) and its worker's LISTEN connection; the
  cluster leader holds one more (``idcs_core.cluster.leader``).
- **A dead worker**: its heartbeat stops (``procrastinate_workers``), or, on this machine,
  its pid is gone (``cluster_nodes``). ``sweep`` puts its jobs back in the queue; the next
  worker finds the task ``running`` and runs the kind's ``task_recovery`` rule instead of
  the handler. Jobs of live workers on other nodes are never touched.
- **A task without a job** (its node died between commit and queueing, or its job was
  aborted at a shut-down) is queued again by ``sweep`` after ``ORPHAN_GRACE`` s.
The cluster's leader (``idcs_core.cluster.leader``) runs ``sweep`` every ``SWEEP_SECONDS``;
every node runs it once at its start (``recover``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import procrastinate
from procrastinate.worker import Worker
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from idcs_core import errors
from idcs_core.db.models import Task, utcnow
from idcs_core.queue import schema
from idcs_core.queue.stats import QueueStats
from idcs_core.tasks import ACTIVE_STATES, InProcessTaskRunner, task_dict

if TYPE_CHECKING:
    from idcs_core.context import CoreContext

log = logging.getLogger("idcs.queue")

JOB_NAME = "idcs.task"  # the one procrastinate task: args {"task_id": ...}
QUEUE = "idcs"
HEARTBEAT_SECONDS = float(os.environ.get("IDCS_WORKER_HEARTBEAT", "2"))
# No heartbeat this long: the worker is dead (15 missed beats: a loaded machine delays beats, and a live
# worker taken for dead would see its job run twice). A worker of this machine whose pid is gone is
# known dead at once (cluster_nodes), without waiting.
STALLED_AFTER = float(os.environ.get("IDCS_WORKER_STALLED_AFTER", "30"))
SWEEP_SECONDS = 2.0
ORPHAN_GRACE = 20.0  # a task this old with no job in the queue is queued again
BUSY_REFRESH = 0.5
LOCAL_BUSY_SECONDS = 5.0  # a task added here counts as busy this long before the snapshot shows it
UNDELIVERED_AGE = 30.0  # ended tasks whose events are still pending this long are delivered by a start
POLL = (0.02, 0.25)  # first and longest pause while watching a task row
DELIVERY_WAIT = 5.0  # how long a watcher waits, after a task's end, for its events to be delivered


def error_for(code: int, msg: str) -> errors.IDCSError:
    """The error a failed task recorded (its ``result.code``), rebuilt on the waiting node."""
    pending: list[type[errors.IDCSError]] = [errors.IDCSError]
    while pending:
        cls = pending.pop(0)
        if cls.code == code:
            return cls(msg)
        pending += cls.__subclasses__()
    err = errors.IDCSError(msg)
    err.code = code
    return err


class QueueTaskRunner(InProcessTaskRunner):
    """The ``TaskRunner`` of a PostgreSQL database: tasks are procrastinate jobs."""

    def __init__(self, core: CoreContext) -> None:
        super().__init__(core)
        from procrastinate.psycopg_connector import PsycopgConnector

        self.app = procrastinate.App(connector=PsycopgConnector(
            conninfo=schema.conninfo(core.config.db_url), min_size=1, max_size=3))
        self.app.task(name=JOB_NAME, queue=QUEUE)(self._job)
        self._opened = False
        self._local: dict[str, tuple[tuple[str, str], float]] = {}
        self._active: set[tuple[str, str]] = set()
        self._refresher: asyncio.Task[None] | None = None
        self._launches: set[asyncio.Task[Any]] = set()
        self.worker: Worker | None = None
        self._worker_run: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ life cycle

    async def open(self) -> None:
        """Connect to the queue (applying procrastinate's schema if an older upgrade could not)."""
        if self._opened:
            return
        async with self.core.db.engine.begin() as conn:
            if not await conn.run_sync(schema.present):
                await conn.run_sync(schema.apply)
        await self.app.open_async()
        self._opened = True
        await self._refresh_busy()
        self._refresher = asyncio.create_task(self._refresh_loop(), name="idcs-busy-refresh")

    async def start_worker(self, concurrency: int = 4, name: str | None = None,
                           graceful: float | None = None) -> int | None:
        """Run a procrastinate worker in this process; return its id (as in ``procrastinate_workers``)."""
        await self.open()
        self.worker = Worker(self.app, queues=[QUEUE], name=name or "idcs", concurrency=concurrency,
                             install_signal_handlers=False, delete_jobs="always",
                             update_heartbeat_interval=HEARTBEAT_SECONDS, stalled_worker_timeout=STALLED_AFTER,
                             shutdown_graceful_timeout=graceful, fetch_job_polling_interval=1.0)
        self._worker_run = asyncio.create_task(self.worker.run(), name="idcs-worker")
        while True:  # until it has registered (its id names it in cluster_nodes) or failed to start
            if self.worker.worker_id is not None or self._worker_run.done():
                break
            await asyncio.sleep(0.01)
        if self._worker_run.done():
            self._worker_run.result()  # raises what stopped it
        return self.worker.worker_id

    async def wait_worker(self) -> None:
        """Until the worker stops (``stop_worker``)."""
        if self._worker_run is not None:
            await asyncio.shield(self._worker_run)

    async def shutdown(self, grace: float = 5.0) -> None:
        """Stop the worker (running jobs get ``grace`` seconds, then are aborted: a later sweep queues
        their tasks again), then disconnect."""
        if self.worker is not None and self._worker_run is not None:
            self.worker.shutdown_graceful_timeout = grace
            self.worker.stop()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._worker_run), grace + 5.0)
        if self._refresher is not None:
            self._refresher.cancel()
        if self._launches:
            await asyncio.wait(list(self._launches), timeout=grace)
        if self._opened:
            with contextlib.suppress(Exception):
                await self.app.close_async()
            self._opened = False

    # ------------------------------------------------------------------ the TaskRunner protocol

    def add(self, session: AsyncSession, kind: str, *, host_name: str, vm_uuid: str = "",
            user_id: int | None = None, params: dict[str, Any] | None = None) -> Task:
        task = super().add(session, kind, host_name=host_name, vm_uuid=vm_uuid, user_id=user_id, params=params)
        self._targets.pop(task.id, None)  # the in-process bookkeeping is not used here
        self._local[task.id] = ((host_name, vm_uuid), time.monotonic())
        return task

    def busy(self, host_name: str, vm_uuid: str) -> bool:
        pair = (host_name, vm_uuid)
        if pair in self._active:
            return True
        now = time.monotonic()
        return any(p == pair and now - t < LOCAL_BUSY_SECONDS for p, t in self._local.values())

    def launch(self, task_id: str) -> None:
        job = asyncio.ensure_future(self._queue(task_id))
        self._launches.add(job)
        job.add_done_callback(self._launches.discard)

    async def run(self, task_id: str, secrets: Mapping[str, str] | None = None) -> dict[str, Any]:
        # secrets travel sealed in the job's arguments (the job row is deleted when it ends)
        await self._queue(task_id, sealed=self.core.keys.encrypt(json.dumps(dict(secrets))) if secrets else None)
        row = await self._watch(task_id, self.core.config.task_timeout)
        if row["state"] == "success":
            return dict(row["result"] or {})
        if row["state"] == "failed":
            raise error_for(int((row["result"] or {}).get("code", 500)), row["message"])
        raise errors.HookTimeout(f"task {task_id} did not end within {self.core.config.task_timeout:g} s "
                                 "(is a worker running?); it goes on in the background")

    async def wait(self, task_id: str, timeout: float) -> dict[str, Any]:
        return await self._watch(task_id, timeout)

    async def settle(self, task_ids: list[str], timeout: float) -> list[str]:
        deadline = time.monotonic() + timeout
        left = list(task_ids)
        while left and time.monotonic() < deadline:
            async with self.core.db.session() as s:
                left = list((await s.execute(select(Task.id).where(
                    Task.id.in_(left), Task.state.in_(ACTIVE_STATES)))).scalars())
            if left:
                await asyncio.sleep(0.1)
        return left

    async def recover(self) -> list[str]:
        """At a node's start: deliver events left pending long ago, and queue again the tasks of dead
        workers and the tasks without a job (never those live workers run)."""
        cutoff = utcnow() - timedelta(seconds=UNDELIVERED_AGE)
        async with self.core.db.session() as s:
            undelivered = list((await s.execute(select(Task.id).where(
                Task.state.not_in(ACTIVE_STATES), Task.outbox.is_not(None), Task.finished_at < cutoff))).scalars())
        for task_id in undelivered:
            await self._deliver(task_id)
        return await self.sweep(orphans_older_than=0.0)

    async def stats(self) -> QueueStats:
        async with self.core.db.session() as s:
            waiting, running = (await s.execute(text(
                "SELECT count(*) FILTER (WHERE status = 'todo'), count(*) FILTER (WHERE status = 'doing') "
                "FROM procrastinate_jobs WHERE queue_name = :q"), {"q": QUEUE})).one()
            oldest = (await s.execute(text(
                "SELECT extract(epoch FROM now() - min(e.at)) FROM procrastinate_jobs j "
                "JOIN procrastinate_events e ON e.job_id = j.id AND e.type = 'deferred' "
                "WHERE j.status = 'todo' AND j.queue_name = :q"), {"q": QUEUE})).scalar()
            workers = (await s.execute(text(
                "SELECT count(*) FROM procrastinate_workers WHERE last_heartbeat > now() - make_interval(secs => :s)"),
                {"s": STALLED_AFTER})).scalar_one()
        return QueueStats(backend="procrastinate", waiting=int(waiting), running=int(running),
                          oldest_waiting_seconds=round(float(oldest), 3) if oldest is not None else None,
                          workers=int(workers))

    # ------------------------------------------------------------------ jobs

    async def _queue(self, task_id: str, sealed: str | None = None) -> None:
        async with self.core.db.session() as s:
            task = await s.get(Task, task_id)
            if task is None:
                raise errors.NotFound(f"task {task_id} does not exist")
            lock = f"idcs:{task.host_name}/{task.vm_uuid}"
        args: dict[str, str] = {"task_id": task_id} | ({"sealed": sealed} if sealed else {})
        await self.app.configure_task(JOB_NAME, lock=lock).defer_async(**args)

    async def _job(self, task_id: str, sealed: str | None = None) -> None:
        """The job: run the task's handler, or its recovery rule when an earlier worker had started it.
        ``sealed``: the secrets its caller handed to ``run``, for the handler only (never a recovery)."""
        async with self.core.db.session() as s:
            task = await s.get(Task, task_id)
            if task is None or task.state not in ACTIVE_STATES:
                return  # ended already (a second job of the same task)
            recovering = task.state == "running"
        if recovering:
            log.warning("task %s (%s) was left running by a dead worker: recovering it", task_id, task.kind)
        elif sealed:
            self._secrets[task_id] = json.loads(self.core.keys.decrypt(sealed))
        try:
            await self._run(task_id, recovering)
        finally:
            self._secrets.pop(task_id, None)

    async def _watch(self, task_id: str, timeout: float) -> dict[str, Any]:
        """The task's row once it has ended and its events are delivered (the audit log's entry among
        them, as with the in-process runner; at most ``DELIVERY_WAIT`` s more), or as it is after
        ``timeout`` seconds."""
        deadline = time.monotonic() + max(0.0, timeout)
        pause, longest = POLL
        ended_seen: float | None = None
        while True:
            async with self.core.db.session() as s:
                task = await s.get(Task, task_id)
                if task is None:
                    raise errors.NotFound(f"task {task_id} does not exist")
                row, undelivered = task_dict(task), task.outbox is not None
            now = time.monotonic()
            if row["state"] not in ACTIVE_STATES:
                ended_seen = now if ended_seen is None else ended_seen
                if not undelivered or now - ended_seen >= DELIVERY_WAIT or now >= deadline:
                    self._local.pop(task_id, None)
                    await self._refresh_busy()  # what the caller does next must not meet a stale "busy"
                    return row
            elif now >= deadline:
                return row
            await asyncio.sleep(min(pause, max(0.01, deadline - now)))
            pause = min(longest, pause * 2)

    # ------------------------------------------------------------------ busy snapshot

    async def _refresh_busy(self) -> None:
        local = list(self._local)
        async with self.core.db.session() as s:
            rows = (await s.execute(select(Task.host_name, Task.vm_uuid).where(Task.state.in_(ACTIVE_STATES)))).all()
            ended = set((await s.execute(select(Task.id).where(
                Task.id.in_(local), Task.state.not_in(ACTIVE_STATES)))).scalars()) if local else set()
        self._active = {(h, v) for h, v in rows}
        now = time.monotonic()
        self._local = {k: v for k, v in self._local.items() if k not in ended and now - v[1] < LOCAL_BUSY_SECONDS}

    async def _refresh_loop(self) -> None:
        """Renew the snapshot every ``BUSY_REFRESH`` s (on the pool: no connection of its own, as
        PostgreSQL's connections are few); a task's end renews it at once on the node that ran it
        (``_deliver``) and on nodes that watched it end (``_watch``)."""
        while True:
            await asyncio.sleep(BUSY_REFRESH)
            try:
                await self._refresh_busy()
            except Exception:  # the database away for a moment: keep the last snapshot
                log.warning("could not refresh the busy VMs", exc_info=True)

    async def _deliver(self, task_id: str) -> None:
        """A task just ended: renew this node's busy snapshot, then its events go out."""
        self._local.pop(task_id, None)
        try:
            await self._refresh_busy()
        except Exception:  # the snapshot catches up within BUSY_REFRESH
            log.warning("could not renew the busy VMs after task %s", task_id, exc_info=True)
        await super()._deliver(task_id)

    # ------------------------------------------------------------------ dead workers, lost jobs

    async def sweep(self, orphans_older_than: float = ORPHAN_GRACE) -> list[str]:
        """Queue again the jobs of dead workers and the active tasks that have no job; return their
        task ids. Safe to run on several nodes at once (a second job of a task finds it ended)."""
        from idcs_core.cluster.nodes import forget_dead_local_workers

        await forget_dead_local_workers(self.core, queue=True)
        manager = self.app.job_manager
        await manager.prune_stalled_workers(STALLED_AFTER)
        resumed: list[str] = []
        for job in await manager.get_stalled_jobs(queue=QUEUE, task_name=JOB_NAME,
                                                  seconds_since_heartbeat=STALLED_AFTER):
            try:
                await manager.retry_job(job)
            except Exception as exc:  # another node's sweep queued it first
                log.info("job %s of a dead worker not queued again here: %s", job.id, exc)
                continue
            log.warning("job %s (task %s) of a dead worker is queued again", job.id, job.task_kwargs.get("task_id"))
            resumed.append(str(job.task_kwargs.get("task_id")))
        cutoff = utcnow() - timedelta(seconds=orphans_older_than)
        async with self.core.db.session() as s:
            orphans = list((await s.execute(text(
                "SELECT t.id FROM tasks t WHERE t.state IN ('pending', 'running') AND t.created_at < :cutoff "
                "AND NOT EXISTS (SELECT 1 FROM procrastinate_jobs j WHERE j.args->>'task_id' = t.id "
                "AND j.status IN ('todo', 'doing')) ORDER BY t.created_at"), {"cutoff": cutoff})).scalars())
        for task_id in orphans:
            if task_id in self._local:
                continue  # added here moments ago: its own launch queues it
            log.warning("task %s has no job in the queue (its node stopped): queued again", task_id)
            await self._queue(task_id)
            resumed.append(task_id)
        return resumed
