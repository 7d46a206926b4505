"""Logging in and out, the current user, and the global API token."""

from __future__ import annotations

from typing import Any

from idcs_core.api.presenters import users as present_users
from idcs_core.api.routing import ADMIN, PUBLIC, USER, Ctx, Router
from idcs_core.api.schemas import Empty, LoginBody, TokenSet
from idcs_core.security import generate_api_token

router = Router("auth")

LOGIN_DATA = {"type": "object", "properties": {
    "token": {"type": "string", "description": "a JWT; send it as Authorization: Bearer <token>"},
    "user_id": {"type": "integer"}, "username": {"type": "string"}, "is_admin": {"type": "boolean"}}}


@router.post("/login", auth=PUBLIC, body=LoginBody, data=LOGIN_DATA)
async def login(ctx: Ctx, body: LoginBody) -> Any:
    """Log in with user name and password; get a token.

    Failures are throttled (code 2004, HTTP 429): per source address (passwords and API
    tokens alike), and per account for the addresses that failed for it; the right password
    from an address that has not failed still works while an account is locked.
    """
    if body.login_type == "token":
        assert body.token
        await ctx.core.auth.check_api_token_login(body.token, ctx.source_ip)
        return {"token": body.token, "user_id": None, "username": "api-token", "is_admin": True}
    assert body.username and body.password
    return await ctx.core.auth.login(body.username, body.password, ctx.source_ip)


@router.post("/api/login", auth=PUBLIC, body=LoginBody, alias_of="/login", data=LOGIN_DATA)
async def login_alias(ctx: Ctx, body: LoginBody) -> Any:
    """Log in (billing panel dialect: also login_type=token with the global API token).

    Tokens from this route get the dialect's shapes where they differ from API.md
    (the host list keyed by server_name)."""
    if body.login_type == "token":
        return await login(ctx, body)
    assert body.username and body.password
    return await ctx.core.auth.login(body.username, body.password, ctx.source_ip, dialect="billing")


@router.post("/logout", auth=USER, vm_scoped=True)
async def logout(ctx: Ctx) -> Any:
    """Log out: the token stops working at once.

    With the global API token (a billing panel that logged in with ``login_type: token``)
    there is no session to end: the answer is success and the token stays valid until it
    is reset (``/api/token/reset``)."""
    await ctx.core.auth.logout(ctx.user)
    return None


@router.get("/api/logout", auth=USER, alias_of="/logout", vm_scoped=True)
async def logout_alias(ctx: Ctx) -> Any:
    """Log out (billing panel dialect)."""
    return await logout(ctx)


@router.get("/api/users/current", auth=USER, vm_scoped=True)
async def current_user(ctx: Ctx) -> Any:
    """The user this token belongs to."""
    p = ctx.user
    if p.user_id is None:  # the global API token, or a one-VM token of a VM without owner
        return {"id": None, "username": p.username, "email": "", "is_admin": p.is_admin, "created_at": None,
                "via": p.via, "scope_vm_id": p.vm_id}
    return present_users.user(await ctx.core.auth.user_data(p.user_id)) | {"scope_vm_id": p.vm_id}


@router.get("/api/token/current", auth=ADMIN)
async def token_current(ctx: Ctx) -> Any:
    """The global API token (authenticates as administrator)."""
    return {"token": ctx.core.auth.api_token}


@router.post("/api/token/set", auth=ADMIN, body=TokenSet)
async def token_set(ctx: Ctx, body: TokenSet) -> Any:
    """Set the global API token (16-256 URL-safe characters)."""
    await ctx.core.auth.set_api_token(body.token, by=ctx.user)
    return {"token": body.token}


@router.post("/api/token/reset", auth=ADMIN, body=Empty)
async def token_reset(ctx: Ctx, body: Empty) -> Any:
    """Generate a new global API token; the old one stops working at once."""
    token = await ctx.core.auth.set_api_token(generate_api_token(), by=ctx.user, action="token.reset")
    return {"token": token}
