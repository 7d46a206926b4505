"""The audit log: who did what, when, and how it ended (``/api/system/logger/detail``)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import select

from idcs_core import errors
from idcs_core.db.models import AuditLog
from idcs_core.logsafe import escape

if TYPE_CHECKING:
    from idcs_core.context import CoreContext
    from idcs_core.services.auth import Principal

log = logging.getLogger("idcs.audit")


async def record(core: CoreContext, principal: Principal | str | None, action: str, target: str = "",
                 result: str = "success", detail: str = "", source_ip: str = "") -> None:
    """Tell the event plugins (the audit log among them) that ``principal`` did ``action``.

    ``principal`` is who acted (or their user name). ``result`` is ``success``, ``failed``, or
    ``started`` for a long operation, whose task's ``task_finished`` says how it ended. Returns
    once the plugins have heard it (the audit entry is stored).
    """
    username = principal if isinstance(principal, str) else principal.username if principal else ""
    if not source_ip and principal is not None and not isinstance(principal, str):
        source_ip = principal.source_ip
    await core.plugins.emit("action_recorded", entry={
        "username": username, "action": action, "target": target, "result": result, "detail": detail,
        "source_ip": source_ip})


@dataclass
class Action:
    """What the audit entry of an action under way will say; the service fills in ``target`` or
    ``detail`` when it learns them (a new VM's id, the disk it picked)."""

    action: str
    target: str = ""
    detail: str = ""
    result: str = "success"  # or "started" for a long operation (its task's end is audited too)


@asynccontextmanager
async def recorded(core: CoreContext, principal: Principal | None, action: str, target: str = "",
                   detail: str = "", *, result: str = "success") -> AsyncIterator[Action]:
    """Audit the action done inside the ``async with``: ``result`` when it completes, ``failed``
    (with the error's message) when it raises. The one way services audit what a request did.

    ``principal`` is who asked (its ``source_ip`` is recorded with it); ``None`` means the CLI
    or the server's own start-up acted, which is not audited.
    """
    done = Action(action, target, detail, result)
    if principal is None:
        yield done
        return
    try:
        yield done
    except Exception as exc:
        why = exc.msg if isinstance(exc, errors.IDCSError) else errors.IDCSError.default_msg
        await record(core, principal, done.action, done.target, "failed",
                     f"{done.detail}: {why}" if done.detail else why)
        raise
    await record(core, principal, done.action, done.target, done.result, done.detail)


def entry(username: str, action: str, target: str = "", result: str = "success", detail: str = "",
          source_ip: str = "") -> AuditLog:
    """One audit entry (also logged), for the audit-log plugin to store."""
    # typed values reach these fields: control characters are escaped in the log and the table
    username, action, target, detail = (escape(x) for x in (username, action, target, detail))
    level = "INFO" if result in ("success", "started") else "WARNING"
    log.log(logging.INFO if level == "INFO" else logging.WARNING, "%s %s %s: %s %s",
            username or "-", action, target, result, detail)
    return AuditLog(level=level, username=username[:64], action=action[:64], target=target[:255],
                    result=result[:16], detail=detail[:4000], source_ip=source_ip[:64])


@dataclass(frozen=True)
class AuditEntry:
    """One stored audit entry."""

    id: int
    time: datetime
    level: str  # INFO, or WARNING for a failure
    username: str
    action: str
    target: str
    result: str
    detail: str
    source_ip: str


async def latest(core: CoreContext, limit: int) -> list[AuditEntry]:
    """The newest ``limit`` entries, newest first."""
    async with core.db.session() as s:
        rows = (await s.execute(select(AuditLog).order_by(AuditLog.id.desc()).limit(limit))).scalars()
        return [AuditEntry(r.id, r.ts, r.level, r.username, r.action, r.target, r.result, r.detail, r.source_ip)
                for r in rows]
