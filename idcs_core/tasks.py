"""Long operations as tasks: recorded before they start, run in the background, observable.

A service adds a ``Task`` row (kind, target, params) in the same transaction as
the change it starts (e.g. the VM row in state ``creating``), commits, then
calls ``runner.launch(task_id)``; the API answers with the task id at once.
The handler registered for the task's kind does the work and reports
progress. Handlers are looked up by kind and receive only the stored params,
so the hand-off can move to a distributed queue (procrastinate on the same
PostgreSQL) by replacing ``InProcessTaskRunner`` alone.

On start-up, tasks left ``running`` or ``pending`` by a crash are marked
failed; the services then re-read the VMs they touched from the engines
(``services.vms.reconcile_interrupted``).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from idcs_core import errors
from idcs_core.db.models import Task, User, utcnow
from idcs_core.services import audit

if TYPE_CHECKING:
    from idcs_core.context import CoreContext

log = logging.getLogger("idcs.tasks")

TaskProgress = Callable[[int, str], None]
Handler = Callable[["CoreContext", Task, TaskProgress], Awaitable[dict[str, Any] | None]]
HANDLERS: dict[str, Handler] = {}

ACTIVE_STATES = ("pending", "running")


def task_handler(kind: str) -> Callable[[Handler], Handler]:
    """Register the coroutine that runs tasks of ``kind``."""

    def register(fn: Handler) -> Handler:
        HANDLERS[kind] = fn
        return fn

    return register


def task_dict(task: Task) -> dict[str, Any]:
    return {"id": task.id, "kind": task.kind, "host_name": task.host_name, "vm_uuid": task.vm_uuid,
            "state": task.state, "progress": task.progress, "message": task.message,
            "result": task.result or {}, "user_id": task.user_id,
            "created_at": task.created_at, "updated_at": task.updated_at, "finished_at": task.finished_at}


class TaskRunner(Protocol):
    """What services need from a task queue."""

    def add(self, session: AsyncSession, kind: str, *, host_name: str, vm_uuid: str,
            user_id: int | None, params: dict[str, Any]) -> Task: ...

    def launch(self, task_id: str) -> None: ...

    async def wait(self, task_id: str, timeout: float) -> dict[str, Any]: ...

    def busy(self, host_name: str, vm_uuid: str) -> bool: ...


class InProcessTaskRunner:
    """Runs tasks as asyncio tasks of this server process."""

    def __init__(self, core: CoreContext) -> None:
        self.core = core
        self._running: dict[str, asyncio.Task[None]] = {}
        self._targets: dict[str, tuple[str, str]] = {}
        self._done: dict[str, asyncio.Event] = {}

    def add(self, session: AsyncSession, kind: str, *, host_name: str, vm_uuid: str = "",
            user_id: int | None = None, params: dict[str, Any] | None = None) -> Task:
        if kind not in HANDLERS:
            raise errors.IDCSError(f"no handler for task kind {kind}")
        task = Task(id=str(uuid.uuid4()), kind=kind, host_name=host_name, vm_uuid=vm_uuid, user_id=user_id,
                    state="pending", progress=0, params=params or {}, result={})
        session.add(task)
        self._targets[task.id] = (host_name, vm_uuid)
        return task

    def busy(self, host_name: str, vm_uuid: str) -> bool:
        return (host_name, vm_uuid) in {self._targets[t] for t in self._running if t in self._targets}

    def launch(self, task_id: str) -> None:
        self._done[task_id] = asyncio.Event()
        self._running[task_id] = asyncio.create_task(self._run(task_id), name=f"idcs-task-{task_id}")

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
        values["updated_at"] = utcnow()
        async with self.core.db.session() as s:
            await s.execute(update(Task).where(Task.id == task_id).values(**values))

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
            loop.call_soon_threadsafe(lambda: asyncio.ensure_future(self._set(task_id, **values)))

        return report

    async def _run(self, task_id: str) -> None:
        try:
            async with self.core.db.session() as s:
                task = await s.get(Task, task_id)
                if task is None:
                    return
                task.state, task.updated_at = "running", utcnow()
            handler = HANDLERS[task.kind]
            try:
                result = await handler(self.core, task, self._progress_reporter(task_id))
            except Exception as exc:
                code = exc.code if isinstance(exc, errors.IDCSError) else 500
                msg = exc.msg if isinstance(exc, errors.IDCSError) else f"{type(exc).__name__}: {exc}"
                if not isinstance(exc, errors.IDCSError):
                    log.exception("task %s (%s) crashed", task_id, task.kind)
                await self._set(task_id, state="failed", message=msg[:2000], result={"code": code},
                                finished_at=utcnow())
                state = "failed"
            else:
                # a handler may say more than "done" (what it noticed on the way) in result["message"]
                message = str((result or {}).get("message") or "done")[:2000]
                await self._set(task_id, state="success", progress=100, message=message, result=result or {},
                                finished_at=utcnow())
                state = "success"
            log.info("task %s %s on %s/%s: %s", task_id, task.kind, task.host_name, task.vm_uuid, state)
            async with self.core.db.session() as s:
                final = await s.get(Task, task_id)
                info = task_dict(final) if final else {"id": task_id, "state": state}
                owner = await s.get(User, task.user_id) if task.user_id is not None else None
            # the route logged the start ("started"); this entry says how it ended
            await audit.record(self.core, owner.username if owner else "", task.kind.replace("_", ".", 1),
                               f"{task.host_name}/{task.vm_uuid}", state,
                               f"task {task_id}: {info.get('message') or ''}")
            await self.core.plugins.emit("task_finished", task=info)
        finally:
            self._running.pop(task_id, None)
            self._targets.pop(task_id, None)
            event = self._done.pop(task_id, None)
            if event:
                event.set()

    async def fail_interrupted(self) -> list[Task]:
        """Mark tasks a crash left pending/running as failed; return them for reconciliation."""
        async with self.core.db.session() as s:
            tasks = list((await s.execute(select(Task).where(Task.state.in_(ACTIVE_STATES)))).scalars())
            for task in tasks:
                task.state, task.finished_at = "failed", utcnow()
                task.message = "the server stopped while this task was running"
                task.result = {"code": 500}
        return tasks

    async def shutdown(self, grace: float = 5.0) -> None:
        """Give running tasks ``grace`` seconds, then cancel them (they fail on restart)."""
        pending = list(self._running.values())
        if pending:
            _done, still = await asyncio.wait(pending, timeout=grace)
            for t in still:
                t.cancel()

