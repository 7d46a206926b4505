"""A change whose engine hook answers after its timeout: settle it once the hook has ended.

The engine facade gives a hook ``task_timeout`` seconds; a synchronous hook that takes longer goes
on in its worker thread (``errors.HookTimeout.pending`` is its future), and an asynchronous one is
cancelled (``pending`` is None). The task has already failed with 1003 and its records were put back
as if nothing happened, so whatever the hook does afterwards must be reconciled, never left untracked:
``settle_late`` waits for the hook in the background and then calls the task kind's ``settle``
coroutine (undo an address, ISO or proxy route made late; record the power state the host ends in).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from idcs_core import errors

if TYPE_CHECKING:
    from idcs_core.context import CoreContext

log = logging.getLogger("idcs.tasks.late")

# Called with what the late hook returned (None for a hook that returns nothing, or when an async hook
# was cancelled and there is nothing to wait for); not called when the late hook failed (nothing made).
Settle = Callable[[Any], Awaitable[object]]


def settle_late(core: CoreContext, exc: errors.IDCSError, what: str, settle: Settle) -> None:
    """If ``exc`` is a hook timeout, run ``settle`` once the hook has ended (in the background)."""
    if isinstance(exc, errors.HookTimeout):
        core.spawn(_after(exc.pending, what, settle))


async def _after(pending: Any, what: str, settle: Settle) -> None:
    result: Any = None
    if pending is not None:
        try:
            result = await pending
        except Exception as late_error:
            log.info("%s: the hook that timed out failed afterwards (%s): nothing to settle", what, late_error)
            return
    log.warning("%s: the hook that timed out has ended: settling what it left", what)
    try:
        await settle(result)
    except errors.IDCSError as exc:
        log.error("%s: could not settle what the late hook left: %s", what, exc.msg)
    except Exception:
        log.exception("%s: settling what the late hook left failed", what)
