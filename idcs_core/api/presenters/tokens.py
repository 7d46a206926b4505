"""Named API tokens and their profiles as ``/api/tokens`` shows them."""

from __future__ import annotations

from typing import Any

from idcs_core.profiles import Profile
from idcs_core.services.api_tokens import NewToken, TokenRecord


def token(t: TokenRecord) -> dict[str, Any]:
    """A token as listed (``revoked`` and ``revoked_at`` both): never its secret or hash."""
    return {"id": t.id, "name": t.name, "profile": t.profile, "scopes": list(t.scopes), "prefix": t.prefix,
            "created_at": t.created_at, "expires_at": t.expires_at, "last_used_at": t.last_used_at,
            "revoked": t.revoked_at is not None, "revoked_at": t.revoked_at}


def tokens(items: list[TokenRecord]) -> list[dict[str, Any]]:
    return [token(t) for t in items]


def created(new: NewToken) -> dict[str, Any]:
    """The create answer: the token with its secret as ``token`` (shown this once)."""
    return token(new.record) | {"token": new.secret}


def profile(p: Profile, scopes: dict[str, str]) -> dict[str, Any]:
    """A client profile: what its billing module's dialect changes, and the scopes a token may have
    (name: what each allows)."""
    return {"name": p.name, "wait_seconds": p.wait_seconds, "hdd_unit": "MB" if p.hdd_in_mb else "GB",
            "flu_unit": "MB" if p.flu_in_mb else "GB", "description": p.description, "scopes": scopes}
