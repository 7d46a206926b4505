"""What a task runner says about its queue (``TaskRunner.stats``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class QueueStats:
    """Queue figures of the whole cluster (the in-process runner: of this process)."""

    backend: str  # "procrastinate" or "in-process"
    waiting: int  # jobs queued, not started
    running: int  # jobs a worker runs now
    oldest_waiting_seconds: float | None  # age of the oldest queued job; None when none waits
    workers: int  # live workers (a heartbeat within the stall limit)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
