"""Users and their quotas as the contract shows them (``/api/users``, ``/api/users/current``)."""

from __future__ import annotations

from typing import Any

from idcs_core.services.users import QuotaUsage, RecountedQuota, UserRecord


def quota(q: QuotaUsage | None) -> dict[str, Any]:
    """``max_*`` then ``used_*`` of each quota field; ``{}`` for a user without a quota row."""
    return {} if q is None else dict(vars(q))  # its fields in order (all plain ints: no asdict copy)


def user(u: UserRecord) -> dict[str, Any]:
    return {"id": u.id, "username": u.username, "email": u.email, "is_admin": u.is_admin,
            "created_at": u.created_at, "quota": quota(u.quota)}


def users(items: list[UserRecord]) -> list[dict[str, Any]]:
    return [user(u) for u in items]


def recounted(items: list[RecountedQuota]) -> list[dict[str, Any]]:
    """The answer of ``/api/system/recalculate-quotas``: each user's id, name and quota."""
    return [{"user_id": r.user_id, "username": r.username} | quota(r.quota) for r in items]
