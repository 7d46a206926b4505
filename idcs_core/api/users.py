"""User accounts (administrators only, except changing one's own password and e-mail)."""

from __future__ import annotations

from typing import Any

from idcs_core import errors
from idcs_core.api.presenters import users as present
from idcs_core.api.routing import ADMIN, USER, Ctx, Router
from idcs_core.api.schemas import ChangeEmail, ChangePassword, Empty, UserCreate, UserUpdate
from idcs_core.services import limits, users

router = Router("users")


@router.get("/api/users", auth=ADMIN)
async def list_users(ctx: Ctx) -> Any:
    """All users with their quotas."""
    return present.users(await users.list_users(ctx.core))


@router.post("/api/users", auth=ADMIN, body=UserCreate)
async def create_user(ctx: Ctx, body: UserCreate) -> Any:
    """Create a user (username, password, email; optional is_admin and quota limits)."""
    quota = body.quota.model_dump(exclude_none=True) if body.quota else None
    user = await users.create_user(ctx.core, body.username, body.password, body.email, body.is_admin, quota,
                                   by=ctx.user)
    return present.user(await users.show_user(ctx.core, user.id))


@router.get("/api/users/{user_id}", auth=ADMIN)
async def get_user(ctx: Ctx, user_id: str) -> Any:
    """One user."""
    return present.user(await users.show_user(ctx.core, int(user_id)))


@router.put("/api/users/{user_id}", auth=ADMIN, body=UserUpdate)
async def update_user(ctx: Ctx, user_id: str, body: UserUpdate) -> Any:
    """Change a user's name, password, e-mail, admin flag or quota limits."""
    changes = body.model_dump(exclude_none=True)
    if not changes:
        raise errors.BadRequest("nothing to change")
    if "quota" in changes:
        changes["quota"] = body.quota.model_dump(exclude_none=True) if body.quota else {}
    await users.update_user(ctx.core, int(user_id), changes, by=ctx.user)
    return present.user(await users.show_user(ctx.core, int(user_id)))


@router.delete("/api/users/{user_id}", auth=ADMIN)
async def delete_user(ctx: Ctx, user_id: str) -> Any:
    """Delete a user. Their VMs stay, with no owner; the last administrator cannot go."""
    await users.delete_user(ctx.core, ctx.user, int(user_id))
    return None


@router.get("/api/users/{user_id}/hosts", auth=ADMIN, data={"type": "array", "items": {"type": "string"}})
async def list_host_grants(ctx: Ctx, user_id: str) -> Any:
    """The hosts this user may create virtual machines on (server names).

    A new user may use no host until an administrator grants one; administrators and the
    global API token may use every host."""
    return await limits.granted_hosts(ctx.core, int(user_id))


@router.post("/api/users/{user_id}/hosts/{hs_name}", auth=ADMIN, body=Empty,
             data={"type": "array", "items": {"type": "string"}})
async def grant_host(ctx: Ctx, user_id: str, hs_name: str, body: Empty) -> Any:
    """Let this user create virtual machines on host ``hs_name`` (granting twice is harmless).
    Answers the user's granted hosts."""
    await limits.grant_host(ctx.core, ctx.user, int(user_id), hs_name)
    return await limits.granted_hosts(ctx.core, int(user_id))


@router.delete("/api/users/{user_id}/hosts/{hs_name}", auth=ADMIN,
               data={"type": "array", "items": {"type": "string"}})
async def revoke_host(ctx: Ctx, user_id: str, hs_name: str) -> Any:
    """Take host ``hs_name`` back: the user's VMs there stay, new ones are refused (403).
    Answers the user's granted hosts."""
    await limits.revoke_host(ctx.core, ctx.user, int(user_id), hs_name)
    return await limits.granted_hosts(ctx.core, int(user_id))


@router.post("/api/users/change-password", auth=USER, body=ChangePassword)
async def change_password(ctx: Ctx, body: ChangePassword) -> Any:
    """Change your own password (old_password, new_password). Other sessions are logged out."""
    await users.change_own_password(ctx.core, ctx.user, body.old_password, body.new_password)
    return None


@router.post("/api/users/change-email", auth=USER, body=ChangeEmail)
async def change_email(ctx: Ctx, body: ChangeEmail) -> Any:
    """Change your own e-mail address."""
    if ctx.user.user_id is None:
        raise errors.BadRequest("the global API token has no e-mail address")
    await users.update_user(ctx.core, ctx.user.user_id, {"email": body.email})
    return {"email": body.email}
