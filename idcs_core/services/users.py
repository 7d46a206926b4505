"""User accounts and their quotas."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from idcs_core import errors, security
from idcs_core.db.models import VM, Backup, Disk, IPAddr, NatRuleRow, Quota, User
from idcs_core.db.session import USER_TOKENS, note, touch_user
from idcs_core.services.audit import recorded

if TYPE_CHECKING:
    from idcs_core.context import CoreContext
    from idcs_core.services.auth import Principal

log = logging.getLogger("idcs")

QUOTA_FIELDS = ("vms", "cpu", "ram", "hdd", "nat", "ips", "backups")


@dataclass(frozen=True)
class QuotaUsage:
    """A user's limit (``max_*``, 0 = unlimited) and use (``used_*``) of each ``QUOTA_FIELDS``."""

    max_vms: int
    max_cpu: int
    max_ram: int
    max_hdd: int
    max_nat: int
    max_ips: int
    max_backups: int
    used_vms: int
    used_cpu: int
    used_ram: int
    used_hdd: int
    used_nat: int
    used_ips: int
    used_backups: int

    @classmethod
    def of(cls, q: Quota) -> QuotaUsage:
        return cls(**{f"{kind}_{f}": getattr(q, f"{kind}_{f}") for kind in ("max", "used") for f in QUOTA_FIELDS})


@dataclass(frozen=True)
class UserRecord:
    """A user account as the services hand it out (never its password hash)."""

    id: int
    username: str
    email: str
    is_admin: bool
    created_at: datetime
    quota: QuotaUsage | None

    @classmethod
    def of(cls, u: User) -> UserRecord:
        return cls(u.id, u.username, u.email, u.is_admin, u.created_at, QuotaUsage.of(u.quota) if u.quota else None)


@dataclass(frozen=True)
class RecountedQuota:
    """One user's quota after ``recalculate_quotas``."""

    user_id: int
    username: str
    quota: QuotaUsage


async def get_user(s: AsyncSession, user_id: int, *, for_update: bool = False) -> User:
    """The user ``user_id`` (404 2002 if none). ``for_update`` locks the row (PostgreSQL) so a
    parallel update and delete of one user run one after the other instead of deadlocking."""
    user = await s.get(User, user_id, with_for_update=for_update or None)
    if user is None:
        raise errors.UserNotFound(f"user {user_id} does not exist")
    return user


async def create_user(core: CoreContext, username: str, password: str, email: str = "",
                      is_admin: bool = False, quota: dict[str, int] | None = None, *,
                      by: Principal | None = None) -> User:
    """Create a user; ``by`` is the administrator asking (audited), None for the CLI and start-up."""
    async with recorded(core, by, "user.create", username):
        return await _create_user(core, username, password, email, is_admin, quota)


async def _create_user(core: CoreContext, username: str, password: str, email: str,
                       is_admin: bool, quota: dict[str, int] | None) -> User:
    password_hash = await core.run_sync(security.hash_password, password)
    # default_quota is the customers' starting point; administrators start unlimited (their own quota
    # still applies when one is given)
    defaults = {} if is_admin else dict(core.settings.get("default_quota") or {})
    limits = defaults | (quota or {})
    try:
        async with core.db.session() as s:
            if (await s.execute(select(User.id).where(func.lower(User.username) == username.lower()))).first():
                raise errors.UserExists(f"user name {username} already exists")
            user = User(username=username, email=email, password_hash=password_hash, is_admin=is_admin)
            user.quota = Quota(**{k: int(v) for k, v in limits.items() if k.startswith("max_")})
            s.add(user)
    except IntegrityError as exc:
        raise errors.UserExists(f"user name {username} already exists") from exc
    return user


async def update_user(core: CoreContext, user_id: int, changes: dict[str, Any], *,
                      by: Principal | None = None) -> User:
    """Apply ``changes`` (username, email, is_admin, password, quota); ``by`` is the administrator
    asking (audited with the changed fields' names), None for the CLI and the user's own changes."""
    async with recorded(core, by, "user.update", str(user_id), ", ".join(sorted(changes))):
        return await _update_user(core, user_id, changes)


async def _update_user(core: CoreContext, user_id: int, changes: dict[str, Any]) -> User:
    async with core.db.session() as s:
        user = await get_user(s, user_id, for_update=True)
        if "username" in changes and changes["username"] != user.username:
            taken = (await s.execute(select(User.id).where(func.lower(User.username) == changes["username"].lower(),
                                                           User.id != user.id))).first()
            if taken:
                raise errors.UserExists(f"user name {changes['username']} already exists")
            user.username = changes["username"]
        if "email" in changes:
            user.email = changes["email"]
        if "is_admin" in changes:
            user.is_admin = bool(changes["is_admin"])
        if changes.get("password"):
            user.password_hash = await core.run_sync(security.hash_password, changes["password"])
        for key, value in (changes.get("quota") or {}).items():
            setattr(user.quota, key, int(value))
        note(s, USER_TOKENS, user_id)  # name or rights may have changed: every node checks their tokens again
    core.auth.forget_user(user_id)
    if changes.get("password"):
        await core.auth.revoke_user_sessions(user_id)
    return user


async def show_user(core: CoreContext, user_id: int) -> UserRecord:
    """One user with their quota; 404 for an unknown id."""
    async with core.db.session() as s:
        return UserRecord.of(await get_user(s, user_id))


async def change_own_password(core: CoreContext, principal: Principal, old_password: str,
                              new_password: str) -> str:
    """Change the principal's own password after checking the old one (``WrongPassword``); their
    other sessions end. Returns the user name."""
    if principal.user_id is None:
        raise errors.BadRequest("the global API token has no password")
    async with recorded(core, principal, "user.change-password", principal.username) as done:
        async with core.db.session() as s:
            user = await get_user(s, principal.user_id)
        done.target = user.username
        if not await core.run_sync(security.verify_password, user.password_hash, old_password):
            raise errors.WrongPassword("the old password is wrong")
        await _update_user(core, user.id, {"password": new_password})
    return user.username


async def delete_user(core: CoreContext, principal: Principal, user_id: int) -> None:
    """Delete a user (not oneself, not the last administrator); their VMs stay, with no owner."""
    async with recorded(core, principal, "user.delete", str(user_id)):
        if principal.user_id == user_id:
            raise errors.BadRequest("you cannot delete your own account")
        async with core.db.session() as s:
            user = await get_user(s, user_id, for_update=True)
            admins = (await s.execute(select(func.count()).select_from(User).where(User.is_admin))).scalar_one()
            if user.is_admin and admins <= 1:
                raise errors.BadRequest("the last administrator cannot be deleted")
            await s.delete(user)
            note(s, USER_TOKENS, user_id)
        core.auth.forget_user(user_id)


async def list_users(core: CoreContext) -> list[UserRecord]:
    async with core.db.session() as s:
        return [UserRecord.of(u) for u in (await s.execute(select(User).order_by(User.id))).scalars()]


FIRST_ADMIN_LOCK = 7_193_021  # pg advisory lock key: nodes starting together make one admin


async def ensure_first_admin(core: CoreContext) -> str | None:
    """On an empty database create ``admin`` with a generated password; print it once.
    On PostgreSQL the check and the creation hold an advisory lock (nodes starting together)."""
    if not core.db.shared:
        return await _first_admin(core)
    async with core.db.engine.connect() as conn:  # a session lock, held on this connection throughout
        await conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": FIRST_ADMIN_LOCK})
        try:
            return await _first_admin(core)
        finally:
            await conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": FIRST_ADMIN_LOCK})
            await conn.commit()


async def _first_admin(core: CoreContext) -> str | None:
    async with core.db.session() as s:
        if (await s.execute(select(User.id).limit(1))).first():
            return None
    if core.config.admin_password:
        await create_user(core, "admin", core.config.admin_password, "", is_admin=True)
        log.info("administrator account 'admin' created with the configured password")
        return None
    password = security.generate_password()
    await create_user(core, "admin", password, "", is_admin=True)
    banner = (f"\n{'=' * 64}\n  OpenIDCS first start: administrator account created\n"
              f"    username: admin\n    password: {password}\n"
              f"  It is shown only this once. Change it with: idcs user passwd admin\n{'=' * 64}\n")
    print(banner, flush=True)  # stdout only: never into the log files
    return password


async def recalculate_quotas(core: CoreContext, *, by: Principal | None = None) -> list[RecountedQuota]:
    """Recount every user's ``used_*`` from the VMs, extra disks, rules, addresses and backups that
    exist; ``by`` is the administrator asking (audited), None when the core recounts by itself."""
    async with recorded(core, by, "quotas.recalculate", "all users") as done:
        result = await _recount(core)
        done.target = f"{len(result)} users"
    return result


async def _recount(core: CoreContext) -> list[RecountedQuota]:
    async with core.db.session() as s:
        users = list((await s.execute(select(User))).scalars())
        sums = {row.owner_id: row for row in (await s.execute(
            select(VM.owner_id, func.count(VM.id).label("vms"), func.coalesce(func.sum(VM.cpu_num), 0).label("cpu"),
                   func.coalesce(func.sum(VM.ram_num), 0).label("ram"),
                   func.coalesce(func.sum(VM.hdd_num), 0).label("hdd")).group_by(VM.owner_id)))}
        disks = dict((await s.execute(select(VM.owner_id, func.coalesce(func.sum(Disk.size_gb), 0))
                                      .join(VM, VM.id == Disk.vm_id).group_by(VM.owner_id))).all())
        nat = dict((await s.execute(select(VM.owner_id, func.count(NatRuleRow.id))
                                    .join(VM, VM.id == NatRuleRow.vm_id).group_by(VM.owner_id))).all())
        ips = dict((await s.execute(select(VM.owner_id, func.count(IPAddr.id))
                                    .join(VM, VM.id == IPAddr.vm_id).group_by(VM.owner_id))).all())
        backups = dict((await s.execute(
            select(VM.owner_id, func.count(Backup.id))
            .join(VM, (VM.host_id == Backup.host_id) & (VM.vm_uuid == Backup.vm_uuid))
            .group_by(VM.owner_id))).all())
        result = []
        for user in users:
            touch_user(s, user.id)
            q = user.quota or Quota(user_id=user.id)
            if user.quota is None:
                user.quota = q
            row = sums.get(user.id)
            q.used_vms = int(row.vms) if row else 0
            q.used_cpu = int(row.cpu) if row else 0
            q.used_ram = int(row.ram) if row else 0
            q.used_hdd = (int(row.hdd) if row else 0) + int(disks.get(user.id, 0))  # system + extra disks
            q.used_nat = int(nat.get(user.id, 0))
            q.used_ips = int(ips.get(user.id, 0))
            q.used_backups = int(backups.get(user.id, 0))
            result.append(RecountedQuota(user.id, user.username, QuotaUsage.of(q)))
    return result
