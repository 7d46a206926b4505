"""Per-user quotas, charged and released in the same transaction as the change they count.

A charge is one conditional ``UPDATE``: it succeeds only if every limit still
holds after the change, so two concurrent creates cannot both slip under a
limit (on SQLite and PostgreSQL alike).
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import CursorResult, and_, or_, update
from sqlalchemy.ext.asyncio import AsyncSession

from idcs_core import errors
from idcs_core.db.models import Quota
from idcs_core.db.session import touch_user

FIELDS = ("vms", "cpu", "ram", "hdd", "nat", "ips", "backups")
UNITS = {"vms": "VMs", "cpu": "CPU cores", "ram": "MB of RAM", "hdd": "GB of disk", "nat": "NAT rules",
         "ips": "IP addresses", "backups": "backups"}


async def charge(s: AsyncSession, owner_id: int | None, **delta: int) -> None:
    """Add ``delta`` (e.g. ``vms=1, cpu=2``) to the owner's usage, or raise ``QuotaExceeded``.

    Negative deltas release usage and never fail. No owner: nothing to count.
    """
    delta = {k: v for k, v in delta.items() if v}
    if owner_id is None or not delta:
        return
    touch_user(s, owner_id)
    unknown = set(delta) - set(FIELDS)
    if unknown:
        raise ValueError(f"unknown quota fields {unknown}")
    conditions = []
    for field, amount in delta.items():
        if amount > 0:
            limit, used = getattr(Quota, f"max_{field}"), getattr(Quota, f"used_{field}")
            conditions.append(or_(limit < 0, used + amount <= limit))
    values = {f"used_{f}": getattr(Quota, f"used_{f}") + a for f, a in delta.items()}
    result = await s.execute(update(Quota).where(and_(Quota.user_id == owner_id, *conditions)).values(**values))
    if cast("CursorResult[Any]", result).rowcount == 0:
        quota = await s.get(Quota, owner_id)
        if quota is None:  # a user without a quota row: unlimited
            return
        await s.refresh(quota)
        for field, amount in delta.items():
            limit, used = getattr(quota, f"max_{field}"), getattr(quota, f"used_{field}")
            if amount > 0 and 0 <= limit < used + amount:
                raise errors.QuotaExceeded(
                    f"quota exceeded: {used} of {limit} {UNITS[field]} used, {amount} more requested")
        raise errors.QuotaExceeded("quota exceeded")
    # release: never below zero
    if any(a < 0 for a in delta.values()):
        await s.execute(update(Quota).where(Quota.user_id == owner_id).values(
            **{f"used_{f}": _at_least_zero(f) for f, a in delta.items() if a < 0}))


def _at_least_zero(field: str):  # type: ignore[no-untyped-def]
    from sqlalchemy import case

    col = getattr(Quota, f"used_{field}")
    return case((col < 0, 0), else_=col)
