"""``idcs`` with timers around the pieces of a VM list (for vm_list.py --phases).

Wraps, at run time and without changing any file, ``Database.session`` (time inside DB
sessions), ``CoreContext.call`` (engine calls, thread hop included) and
``services.vm_reads.list_vms`` (the whole service call), and prints one line per VM list:
``PHASE total=<ms> db=<ms> sessions=<n> engine=<ms>``. Then runs the normal CLI.
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

from idcs_core import context as context_module
from idcs_core.db import session as session_module
from idcs_core.services import vm_reads as vms_service

_acc: contextvars.ContextVar[dict[str, float] | None] = contextvars.ContextVar("bench_phases", default=None)
_session = session_module.Database.session
_call = context_module.CoreContext.call
_list_vms = vms_service.list_vms


@contextlib.asynccontextmanager
async def session(self: Any) -> AsyncIterator[Any]:
    acc, started = _acc.get(), time.perf_counter()
    async with _session(self) as s:
        yield s
    if acc is not None:
        acc["db"] += time.perf_counter() - started
        acc["sessions"] += 1


async def call(self: Any, *args: Any, **kwargs: Any) -> Any:
    acc, started = _acc.get(), time.perf_counter()
    try:
        return await _call(self, *args, **kwargs)
    finally:
        if acc is not None:
            acc["engine"] += time.perf_counter() - started


async def list_vms(*args: Any, **kwargs: Any) -> Any:
    acc = {"db": 0.0, "sessions": 0, "engine": 0.0}
    token = _acc.set(acc)
    started = time.perf_counter()
    try:
        return await _list_vms(*args, **kwargs)
    finally:
        _acc.reset(token)
        print(f"PHASE total={(time.perf_counter() - started) * 1000:.3f} db={acc['db'] * 1000:.3f} "
              f"sessions={acc['sessions']} engine={acc['engine'] * 1000:.3f}", flush=True)


session_module.Database.session = session  # type: ignore[method-assign,assignment]
context_module.CoreContext.call = call  # type: ignore[method-assign]
vms_service.list_vms = list_vms  # type: ignore[assignment]

if __name__ == "__main__":
    from idcs_core.cli import main

    sys.exit(main())
