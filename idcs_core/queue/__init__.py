"""Tasks on a queue shared by every node (procrastinate on PostgreSQL).

``stats`` and ``schema`` import nothing heavy; ``runner`` imports procrastinate and is only
imported when the database is PostgreSQL (``choose_runner``), so ``pip install idcs-core``
without the ``cluster`` extra still serves on SQLite.
"""

from __future__ import annotations

import importlib.util
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from idcs_core.context import CoreContext
    from idcs_core.tasks import TaskRunner


def queue_available() -> bool:
    """Whether procrastinate is installed (the ``cluster`` extra)."""
    return importlib.util.find_spec("procrastinate") is not None


def wants_queue(db_url: str) -> bool:
    """PostgreSQL with procrastinate installed runs tasks on the queue, unless
    ``IDCS_TASK_QUEUE=inprocess`` keeps them in the server process (one node only)."""
    if os.environ.get("IDCS_TASK_QUEUE", "").lower() == "inprocess":
        return False
    return db_url.startswith("postgresql") and queue_available()


def choose_runner(core: CoreContext) -> TaskRunner:
    """The task runner for ``core``'s database: the queue on PostgreSQL, else in-process."""
    if wants_queue(core.config.db_url):
        from idcs_core.queue.runner import QueueTaskRunner

        return QueueTaskRunner(core)
    from idcs_core.tasks import InProcessTaskRunner

    return InProcessTaskRunner(core)
