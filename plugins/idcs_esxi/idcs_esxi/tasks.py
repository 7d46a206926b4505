"""Waiting for vSphere tasks from a worker thread, feeding their progress to the core's task."""

from __future__ import annotations

import time
from typing import Any

from pyVmomi import vim

from idcs_core import errors
from idcs_core.types import Progress
from idcs_esxi.client import Connection
from idcs_esxi.props import read_one

_PATHS = ["info.state", "info.progress", "info.error", "info.result"]


def no_progress(percent: int, message: str = "") -> None:
    """A ``Progress`` that reports nowhere (for calls made without a task)."""


def wait(conn: Connection, task: vim.Task, what: str, progress: Progress | None = None,
         start: int = 0, end: int = 100, timeout: float = 1800) -> Any:
    """Wait for ``task`` to end; its percent is mapped onto ``start``..``end`` of ``progress``.

    Returns the task's result; raises the task's fault (``errors.backend_errors`` maps it).
    Polls with one small property read per step, backing off up to one second.
    """
    report = progress or no_progress
    deadline = time.monotonic() + timeout
    delay, last = 0.05, -1
    while True:
        info = read_one(conn, task, vim.Task, _PATHS)
        state = info.get("info.state")
        if state == vim.TaskInfo.State.success:
            report(end, f"{what}: done")
            return info.get("info.result")
        if state == vim.TaskInfo.State.error:
            fault = info.get("info.error")
            if fault is not None:
                raise fault
            raise errors.VMOperationFailed(f"{what} failed on the host")
        percent = info.get("info.progress")
        if isinstance(percent, int) and percent != last:
            last = percent
            report(start + (end - start) * max(0, min(percent, 100)) // 100, what)
        if time.monotonic() > deadline:
            raise errors.VMOperationFailed(f"{what}: the host's task did not end within {timeout:.0f} s")
        time.sleep(delay)
        delay = min(delay * 2, 1.0)
