"""Back-end faults turned into ``idcs_core.errors`` business errors with clear messages."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import asyncssh

from idcs_core import errors


@contextlib.contextmanager
def translated(what: str) -> Iterator[None]:
    """Let business errors through; turn SSH and OS faults into 1003 and anything else into 1005."""
    try:
        yield
    except errors.IDCSError:
        raise
    except (asyncssh.Error, ConnectionError, OSError) as exc:
        raise errors.HostUnreachable(f"{what}: the host cannot be reached ({exc})") from exc
    except Exception as exc:  # every other fault is the operation failing
        raise errors.VMOperationFailed(f"{what} failed: {exc}") from exc


def not_found_in(text: str) -> bool:
    """Whether an LXC tool's message says the container does not exist."""
    lowered = text.lower()
    return "does not exist" in lowered or "not defined" in lowered or "no container" in lowered
