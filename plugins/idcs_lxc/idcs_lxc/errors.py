"""Back-end faults turned into ``idcs_core.errors`` business errors with clear messages."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager

import asyncssh

from idcs_core import errors
from idcs_core.enginekit import ErrorFactory, translated


def _unreachable(exc: BaseException, action: str) -> errors.IDCSError:
    return errors.HostUnreachable(f"{action}: the host cannot be reached ({exc or type(exc).__name__})")


# SSH and OS faults are the host out of reach (1003); anything else is the operation failing (1005).
FAULTS: dict[type[BaseException] | tuple[type[BaseException], ...], ErrorFactory] = {
    (asyncssh.Error, ConnectionError, OSError): _unreachable,
}


def translate(action: str, on_unreachable: Callable[[], None] | None = None) -> AbstractContextManager[None]:
    """Business errors pass; SSH and OS faults become 1003 (after ``on_unreachable``), the rest 1005."""
    return translated(action, FAULTS, on_unreachable=on_unreachable)


def not_found_in(text: str) -> bool:
    """Whether an LXC tool's message says the container does not exist."""
    lowered = text.lower()
    return "does not exist" in lowered or "not defined" in lowered or "no container" in lowered
