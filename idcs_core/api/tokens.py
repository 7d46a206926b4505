"""Named API tokens for billing modules: create (secret shown once), list, revoke; profiles."""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import Field

from idcs_core import errors
from idcs_core.api.presenters import tokens as present
from idcs_core.api.routing import ADMIN, Ctx, Router
from idcs_core.api.schemas import Body, Empty, SafeName
from idcs_core.profiles import PROFILES
from idcs_core.services.api_tokens import SCOPES

router = Router("tokens")

TOKEN_ITEM = {"type": "object", "properties": {
    "id": {"type": "integer"}, "name": {"type": "string"},
    "profile": {"type": "string", "enum": list(PROFILES)},
    "scopes": {"type": "array", "items": {"type": "string", "enum": list(SCOPES)}},
    "prefix": {"type": "string", "description": "the secret's first characters, to recognise it"},
    "created_at": {"type": "string"}, "expires_at": {"type": "string", "nullable": True},
    "last_used_at": {"type": "string", "nullable": True, "description": "updated at most once a minute"},
    "revoked": {"type": "boolean"}}}


ProfileName = Literal["openidcs", "idcsmart", "swapidc", "xiaoheifs"]
ScopeName = Literal["read-only", "hosts", "vms"]
assert set(get_args(ProfileName)) == set(PROFILES) and set(get_args(ScopeName)) == set(SCOPES)


class TokenCreate(Body):
    name: SafeName
    profile: ProfileName = Field(default="openidcs", description="the billing module's dialect (see "
                                 "/api/tokens/profiles)")
    scopes: list[ScopeName] = Field(default_factory=list, max_length=len(SCOPES),
                                    description="empty: everything an administrator may do")
    expires_in_days: Annotated[int, Field(ge=1, le=3650)] | None = None


@router.get("/api/tokens/profiles", auth=ADMIN, data={"type": "array"})
async def profiles(ctx: Ctx) -> Any:
    """The client profiles a token may have: what each module's dialect changes, and the
    scopes a token may be narrowed to."""
    return [present.profile(p, SCOPES) for p in PROFILES.values()]


@router.get("/api/tokens", auth=ADMIN, data={"type": "array", "items": TOKEN_ITEM})
async def list_tokens(ctx: Ctx) -> Any:
    """Named API tokens with their profile, scopes, expiry and last use (never the secret)."""
    return present.tokens(await ctx.core.auth.named.list())


@router.post("/api/tokens", auth=ADMIN, body=TokenCreate, data=TOKEN_ITEM)
async def create_token(ctx: Ctx, body: TokenCreate) -> Any:
    """Create a named API token for a billing module. ``token`` (the secret, ``idcst_...``)
    is in this answer only: it is stored as a SHA-256 hash. The token acts as administrator,
    narrowed by ``scopes`` (``read-only``: GET only; ``hosts`` / ``vms``: those areas only),
    and speaks its ``profile``'s dialect. 409 when the name is taken."""
    return present.created(await ctx.core.auth.named.create(body.name, body.profile, body.scopes, body.expires_in_days,
                                                            by=ctx.user))


@router.delete("/api/tokens/{token_id}", auth=ADMIN, data=TOKEN_ITEM)
async def revoke_token(ctx: Ctx, token_id: str) -> Any:
    """Revoke a named API token: it stops working at once (the record stays, listed as revoked)."""
    if not token_id.isdigit() or len(token_id) > 9:
        raise errors.BadRequest("token_id: must be a token's id (an integer)")
    return present.token(await ctx.core.auth.named.revoke(int(token_id), by=ctx.user))


@router.post("/api/tokens/{token_id}/revoke", auth=ADMIN, body=Empty, alias_of="/api/tokens/{token_id}")
async def revoke_token_post(ctx: Ctx, token_id: str, body: Empty) -> Any:
    """Revoke a named API token (POST form, for clients that cannot send DELETE)."""
    return await revoke_token(ctx, token_id)

