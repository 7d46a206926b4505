"""The audit log: who did what, when, and how it ended (``/api/system/logger/detail``)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from idcs_core.db.models import AuditLog
from idcs_core.logsafe import escape

if TYPE_CHECKING:
    from idcs_core.context import CoreContext
    from idcs_core.services.auth import Principal

log = logging.getLogger("idcs.audit")


async def record(core: CoreContext, principal: Principal | str | None, action: str, target: str = "",
                 result: str = "success", detail: str = "", source_ip: str = "") -> None:
    """Write one audit entry in its own transaction (it survives the caller's rollback).

    ``principal`` is who acted (or their user name). ``result`` is ``success``, ``failed``, or
    ``started`` for a long operation, whose task adds the entry saying how it ended.
    """
    username = principal if isinstance(principal, str) else principal.username if principal else ""
    async with core.db.session() as s:
        s.add(entry(username, action, target, result, detail, source_ip))


def entry(username: str, action: str, target: str = "", result: str = "success", detail: str = "",
          source_ip: str = "") -> AuditLog:
    """One audit entry (also logged), for a caller to add in the transaction of the change it records."""
    # typed values reach these fields: control characters are escaped in the log and the table
    username, action, target, detail = (escape(x) for x in (username, action, target, detail))
    level = "INFO" if result in ("success", "started") else "WARNING"
    log.log(logging.INFO if level == "INFO" else logging.WARNING, "%s %s %s: %s %s",
            username or "-", action, target, result, detail)
    return AuditLog(level=level, username=username[:64], action=action[:64], target=target[:255],
                    result=result[:16], detail=detail[:4000], source_ip=source_ip[:64])


async def latest(core: CoreContext, limit: int) -> list[dict[str, Any]]:
    async with core.db.session() as s:
        rows = (await s.execute(select(AuditLog).order_by(AuditLog.id.desc()).limit(limit))).scalars()
        return [{"id": r.id, "time": r.ts, "level": r.level, "username": r.username, "action": r.action,
                 "target": r.target, "result": r.result, "detail": r.detail, "source_ip": r.source_ip}
                for r in rows]
