"""Long operations as tasks: recorded before they start, run in the background, observable,
and resolved after a crash.

A service adds a ``Task`` row (kind, target, params) in the same transaction as
the change it starts (e.g. the VM row in state ``creating``), commits, then
calls ``runner.launch(task_id)`` (the API answers with the task id at once) or
``await runner.run(task_id)`` (a call that answers with the result, e.g. a NAT
add). The handler registered for the task's kind does the work and reports
progress. Handlers are looked up by kind and receive only the stored params,
so the hand-off moves to a distributed queue by replacing ``InProcessTaskRunner``
alone: services only use the ``TaskRunner`` protocol. On PostgreSQL,
``idcs_core.queue.runner.QueueTaskRunner`` does (procrastinate jobs that any
node's worker runs; see there for locks, dead workers and ``busy``); SQLite keeps
this in-process runner.

How a task ends, exactly once:
- its final state, progress and message, its audit entry and its pending events
  (``task_finished`` plus what the handler deferred with ``defer_event``, e.g.
  ``vm_created``) are written in ONE transaction, and only if the task is still
  pending/running (so a second ending is a no-op);
- the pending events (the task's ``outbox``) are then delivered to the event
  plugins and cleared. A crash between delivering and clearing (milliseconds)
  delivers them again at the next start: at least once, with the task id as the
  key a plugin may de-duplicate on.

After a crash (``recover``, at start-up, before the server answers requests):
every task a dead process left pending/running is run again through the
*recovery rule* registered for its kind with ``task_recovery`` (next to each
handler), which looks at the back end and settles both the records and the task.
While it runs, the task is ``running`` and its VM is busy (409 to changes). A
rule that cannot reach the host is retried with back-off, so the task never ends
with its VM left in an in-between state. A rule's success reads "recovered after
a restart: ..."; its failure carries the reason.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from idcs_core import errors
from idcs_core.db.models import Task, utcnow
from idcs_core.db.session import after_commit
from idcs_core.queue.stats import QueueStats
from idcs_core.types import Progress

if TYPE_CHECKING:
    from idcs_core.context import CoreContext
    from idcs_core.services.auth import Principal

log = logging.getLogger("idcs.tasks")

TaskProgress = Progress  # how a task reports how far it is (the same callable engines receive)
Handler = Callable[["CoreContext", Task, TaskProgress], Awaitable[dict[str, Any] | None]]
H = TypeVar("H", bound=Handler)  # a registered handler keeps its own (narrower) type
HANDLERS: dict[str, Handler] = {}
# Kind -> what to do with a task of that kind that a dead process left running.
RECOVERIES: dict[str, Handler] = {}

ACTIVE_STATES = ("pending", "running")
RECOVERED = "recovered after a restart"
# Back-off while a recovery rule cannot reach its host: first wait, longest wait (seconds).
RECOVERY_RETRY = (1.0, 60.0)


class NotedProgress:
    """A task's progress that keeps the first message the engine gave, so the task's final message
    can repeat what the customer noticed: an engine announces a restart or recreation before it
    acts (e.g. "the container is recreated to attach disk data"), and its later steps ("stopping
    the container", ...) go to the task's progress only.

    Handed to engine hooks in place of the task's progress (thread-safe like it)."""

    def __init__(self, progress: TaskProgress) -> None:
        self._progress = progress
        self.first = ""

    def __call__(self, percent: int, message: str = "") -> None:
        if message and not self.first:
            self.first = message
        self._progress(percent, message)

    def final(self, text: str) -> str:
        """``text``, followed by what the engine announced, if it announced anything."""
        return f"{text}; {self.first}" if self.first else text


def task_handler(kind: str) -> Callable[[H], H]:
    """Register the coroutine that runs tasks of ``kind``."""

    def register(fn: H) -> H:
        HANDLERS[kind] = fn
        return fn

    return register


def task_recovery(kind: str) -> Callable[[H], H]:
    """Register the rule that settles a task of ``kind`` left running by a dead process.

    The rule gets the task as stored (params, message, progress), looks at the back end,
    puts the records right, and returns the result (success) or raises (failed, with the
    reason). It must be idempotent: a crash during recovery runs it again."""

    def register(fn: H) -> H:
        RECOVERIES[kind] = fn
        return fn

    return register


def defer_event(task: Task, event: str, /, **kwargs: Any) -> None:
    """Have event hook ``event`` called with ``kwargs`` once ``task`` has ended.

    Change ``task`` (loaded in the session that also records the change the event
    tells of) so both commit together; one pending event per name (a recovery that
    defers the same event again replaces it, so plugins hear it once). Values are
    stored as JSON: times reach the plugins as ISO 8601 strings."""
    task.outbox = dict(task.outbox or {}) | {event: _jsonable(kwargs)}


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def answer_of(result: dict[str, Any]) -> dict[str, Any]:
    """What a route that waited for its task answers: the task's result without the task's own
    ``message`` (which is for the task list and the audit log)."""
    return {k: v for k, v in result.items() if k != "message"}


def task_dict(task: Task) -> dict[str, Any]:
    return {"id": task.id, "kind": task.kind, "host_name": task.host_name, "vm_uuid": task.vm_uuid,
            "state": task.state, "progress": task.progress, "message": task.message,
            "result": task.result or {}, "user_id": task.user_id,
            "created_at": task.created_at, "updated_at": task.updated_at, "finished_at": task.finished_at}


class TaskRunner(Protocol):
    """What services and the server's start-up need from a task queue."""

    def add(self, session: AsyncSession, kind: str, *, host_name: str, vm_uuid: str,
            user_id: int | None, params: dict[str, Any]) -> Task: ...

    def launch(self, task_id: str) -> None:
        """Run the committed task in the background."""

    def submit(self, session: AsyncSession, kind: str, *, host_name: str, vm_uuid: str,
               user_id: int | None, params: dict[str, Any]) -> Task:
        """Add a task and run it in the background once ``session`` commits (never if it rolls back)."""

    async def run(self, task_id: str, secrets: Mapping[str, str] | None = None) -> dict[str, Any]:
        """Run the committed task now; return its result or raise its error.

        ``secrets`` (e.g. a new guest password) reach the handler through ``secret`` and are never
        stored in the task: in memory for a run in this process; sealed with the server's key in
        the queued job, which is deleted when it ends, for a run on another node's worker."""

    def secret(self, task_id: str, name: str) -> str | None:
        """A secret the caller of ``run`` handed to this run of the task (None in any other run,
        e.g. a recovery after a restart)."""

    async def wait(self, task_id: str, timeout: float) -> dict[str, Any]: ...

    def busy(self, host_name: str, vm_uuid: str) -> bool: ...

    async def recover(self) -> list[str]:
        """Start the recovery of every task a dead process left running; return their ids."""

    async def settle(self, task_ids: list[str], timeout: float) -> list[str]:
        """Wait up to ``timeout`` seconds for these tasks to end; return those still running."""

    async def shutdown(self, grace: float = 5.0) -> None: ...

    async def stats(self) -> QueueStats:
        """Queue depth, running jobs, oldest waiting job and live workers (``idcs cluster status``)."""


class InProcessTaskRunner:
    """Runs tasks as asyncio tasks of this server process."""

    def __init__(self, core: CoreContext) -> None:
        self.core = core
        self._running: dict[str, asyncio.Task[tuple[dict[str, Any] | None, Exception | None]]] = {}
        self._targets: dict[str, tuple[str, str]] = {}
        self._done: dict[str, asyncio.Event] = {}
        self._secrets: dict[str, dict[str, str]] = {}  # task id -> what its caller handed to this run

    def add(self, session: AsyncSession, kind: str, *, host_name: str, vm_uuid: str = "",
            user_id: int | None = None, params: dict[str, Any] | None = None) -> Task:
        if kind not in HANDLERS:
            raise errors.IDCSError(f"no handler for task kind {kind}")
        task = Task(id=str(uuid.uuid4()), kind=kind, host_name=host_name, vm_uuid=vm_uuid, user_id=user_id,
                    state="pending", progress=0, params=params or {}, result={}, outbox=None)
        session.add(task)
        self._targets[task.id] = (host_name, vm_uuid)
        return task

    def busy(self, host_name: str, vm_uuid: str) -> bool:
        return (host_name, vm_uuid) in {self._targets[t] for t in self._running if t in self._targets}

    def launch(self, task_id: str) -> None:
        self._start(task_id, recovering=False)

    def submit(self, session: AsyncSession, kind: str, *, host_name: str, vm_uuid: str = "",
               user_id: int | None = None, params: dict[str, Any] | None = None) -> Task:
        task = self.add(session, kind, host_name=host_name, vm_uuid=vm_uuid, user_id=user_id, params=params)
        after_commit(session, functools.partial(self.launch, task.id))
        return task

    async def run(self, task_id: str, secrets: Mapping[str, str] | None = None) -> dict[str, Any]:
        if secrets:
            self._secrets[task_id] = dict(secrets)
        try:
            # shielded: a caller that goes away (client disconnect) does not cut the task short
            result, error = await asyncio.shield(self._start(task_id, recovering=False))
        finally:
            self._secrets.pop(task_id, None)
        if error is not None:
            raise error
        return result or {}

    def secret(self, task_id: str, name: str) -> str | None:
        return self._secrets.get(task_id, {}).get(name)

    def _start(self, task_id: str, recovering: bool
               ) -> asyncio.Task[tuple[dict[str, Any] | None, Exception | None]]:
        self._done[task_id] = asyncio.Event()
        job = asyncio.create_task(self._run(task_id, recovering), name=f"idcs-task-{task_id}")
        self._running[task_id] = job
        return job

    async def wait(self, task_id: str, timeout: float) -> dict[str, Any]:
        """Wait up to ``timeout`` seconds for the task to end; return it as it is then."""
        event = self._done.get(task_id)
        if event is not None and timeout > 0:
            try:
                await asyncio.wait_for(event.wait(), timeout)
            except TimeoutError:
                pass
        async with self.core.db.session() as s:
            task = await s.get(Task, task_id)
            if task is None:
                raise errors.NotFound(f"task {task_id} does not exist")
            return task_dict(task)

    async def _set(self, task_id: str, **values: Any) -> None:
        """Change a task that is still active (a late progress report never touches an ended one)."""
        values["updated_at"] = utcnow()
        async with self.core.db.session() as s:
            await s.execute(update(Task).where(Task.id == task_id, Task.state.in_(ACTIVE_STATES)).values(**values))

    def _progress_reporter(self, task_id: str) -> TaskProgress:
        loop = asyncio.get_running_loop()
        last = {"percent": -1}

        def report(percent: int, message: str = "") -> None:
            percent = max(0, min(99, int(percent)))
            if percent == last["percent"]:
                return
            last["percent"] = percent
            values = {"progress": percent, "message": str(message)[:500]}
            # thread-safe: engines call this from worker threads
            try:
                loop.call_soon_threadsafe(lambda: asyncio.ensure_future(self._set(task_id, **values)))
            except RuntimeError:  # the server stopped (its loop is closed) while the engine works on:
                pass  # the engine finishes, and the next start recovers the task from what it made

        return report

    async def _run(self, task_id: str, recovering: bool) -> tuple[dict[str, Any] | None, Exception | None]:
        try:
            async with self.core.db.session() as s:
                task = await s.get(Task, task_id)
                if task is None or task.state not in ACTIVE_STATES:
                    return None, None
                task.state, task.updated_at = "running", utcnow()
                if recovering:
                    task.message = "the server restarted while this task was running: recovering"
            progress = self._progress_reporter(task_id)
            try:
                if recovering:
                    result = await self._recover_one(task, progress)
                else:
                    result = await HANDLERS[task.kind](self.core, task, progress)
            except Exception as exc:
                code = exc.code if isinstance(exc, errors.IDCSError) else 500
                msg = exc.msg if isinstance(exc, errors.IDCSError) else f"{type(exc).__name__}: {exc}"
                if not isinstance(exc, errors.IDCSError):
                    log.exception("task %s (%s) crashed", task_id, task.kind)
                await self._finish(task, "failed", msg, {"code": code})
                return None, exc
            # a handler may say more than "done" (what it noticed on the way) in result["message"]
            message = str((result or {}).get("message") or "done")
            if recovering:
                message = f"{RECOVERED}: {message}"
            await self._finish(task, "success", message, result or {})
            return result, None
        finally:
            self._running.pop(task_id, None)
            self._targets.pop(task_id, None)
            event = self._done.pop(task_id, None)
            if event:
                event.set()

    async def _recover_one(self, task: Task, progress: TaskProgress) -> dict[str, Any] | None:
        """Run the kind's recovery rule; while the host does not answer, wait and try again."""
        rule = RECOVERIES.get(task.kind)
        if rule is None:
            raise errors.VMOperationFailed("the server stopped while this task was running, and tasks of kind "
                                           f"{task.kind} have no recovery rule: check the VM")
        pause, longest = RECOVERY_RETRY
        while True:
            try:
                return await rule(self.core, task, progress)
            except errors.HostUnreachable as exc:
                log.warning("recovering task %s (%s): host %s does not answer (%s); again in %g s",
                            task.id, task.kind, task.host_name, exc.msg, pause)
                await self._set(task.id, message=f"recovering after a restart: waiting for host {task.host_name} "
                                                 f"({exc.msg})"[:500])
                await asyncio.sleep(pause)
                pause = min(longest, pause * 2)

    async def _finish(self, task: Task, state: str, message: str, result: dict[str, Any]) -> None:
        """End the task (state, pending events) in one transaction, then deliver its events (the audit
    log's entry among them)."""
        async with self.core.db.session() as s:
            row = await s.get(Task, task.id, with_for_update=True)
            if row is None or row.state not in ACTIVE_STATES:
                log.warning("task %s already ended (%s): outcome %s not recorded", task.id,
                            row.state if row else "gone", state)
                return
            row.state, row.message, row.result = state, message[:2000], result
            row.finished_at = row.updated_at = utcnow()
            if state == "success":
                row.progress = 100
            # the audit log hears it too: its entry says how the task ended
            defer_event(row, "task_finished", task=task_dict(row))
        log.info("task %s %s on %s/%s: %s", task.id, task.kind, task.host_name, task.vm_uuid, state)
        await self._deliver(task.id)

    async def _deliver(self, task_id: str) -> None:
        """Call the event hooks the ended task has pending (task_finished last), then clear them."""
        async with self.core.db.session() as s:
            row = await s.get(Task, task_id)
            outbox = dict(row.outbox or {}) if row is not None else {}
        if not outbox:
            return
        finished = outbox.pop("task_finished", None)
        for event, kwargs in [*outbox.items(), *([("task_finished", finished)] if finished else [])]:
            await self.core.plugins.emit(event, **kwargs)
        async with self.core.db.session() as s:
            await s.execute(update(Task).where(Task.id == task_id).values(outbox=None))

    async def recover(self) -> list[str]:
        """Deliver events an earlier process did not, then start a recovery for every task it
        left pending or running (each runs its kind's rule, see ``task_recovery``)."""
        async with self.core.db.session() as s:
            undelivered = list((await s.execute(select(Task.id).where(
                Task.state.not_in(ACTIVE_STATES), Task.outbox.is_not(None)))).scalars())
            interrupted = list((await s.execute(select(Task).where(Task.state.in_(ACTIVE_STATES))
                                                .order_by(Task.created_at))).scalars())
        for task_id in undelivered:
            await self._deliver(task_id)
        for task in interrupted:
            self._targets[task.id] = (task.host_name, task.vm_uuid)
            self._start(task.id, recovering=True)
        return [t.id for t in interrupted]

    async def settle(self, task_ids: list[str], timeout: float) -> list[str]:
        jobs = [self._running[t] for t in task_ids if t in self._running]
        if jobs:
            await asyncio.wait(jobs, timeout=timeout)
        return [t for t in task_ids if t in self._running]

    async def stats(self) -> QueueStats:
        """Nothing waits here: a task starts as it is launched; the worker is this process."""
        return QueueStats(backend="in-process", waiting=0, running=len(self._running),
                          oldest_waiting_seconds=None, workers=1)

    async def shutdown(self, grace: float = 5.0) -> None:
        """Give running tasks ``grace`` seconds, then cancel them (they are recovered at the next start)."""
        pending = list(self._running.values())
        if pending:
            _done, still = await asyncio.wait(pending, timeout=grace)
            for t in still:
                t.cancel()


# ---------------------------------------------------------------------- queries (the API's task routes)


async def get_task(core: CoreContext, principal: Principal, task_id: str) -> dict[str, Any]:
    """One task the caller may see (their own; an administrator: any); 404 otherwise."""
    async with core.db.session() as s:
        task = await s.get(Task, task_id)
        if task is None or (not principal.is_admin and task.user_id != principal.user_id):
            raise errors.NotFound(f"task {task_id} does not exist")
        return task_dict(task)


async def list_tasks(core: CoreContext, principal: Principal, limit: int,
                     state: str | None) -> list[dict[str, Any]]:
    """The caller's latest tasks (an administrator: everyone's), newest first, optionally in one state."""
    async with core.db.session() as s:
        query = select(Task).order_by(Task.created_at.desc()).limit(limit)
        if not principal.is_admin:
            query = query.where(Task.user_id == principal.user_id)
        if state:
            query = query.where(Task.state == state)
        return [task_dict(t) for t in (await s.execute(query)).scalars()]
