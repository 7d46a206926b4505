"""Named API tokens: one per billing module, each with its client profile.

The secret (``idcst_`` + 43 URL-safe characters) is returned once, by ``create``;
only its SHA-256 is stored, so a database leak gives no usable token. A token
authenticates as administrator, narrowed by its scopes; ``revoke`` ends it at once
in this process (the in-memory cache entry is dropped with the row change) and, on
PostgreSQL, in every other node (the commit's NOTIFY, ``db.bus``); a process that
cannot hear that (SQLite beside an ``idcs token revoke``) stops it within
``RECHECK_SECONDS``.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from idcs_core import errors
from idcs_core.db.models import ApiToken, utcnow
from idcs_core.db.session import NAMED_TOKENS, note
from idcs_core.profiles import PROFILES
from idcs_core.services.audit import recorded

if TYPE_CHECKING:
    from idcs_core.context import CoreContext
    from idcs_core.services.auth import Principal

SECRET_PREFIX = "idcst_"
RECHECK_SECONDS = 5.0
LAST_USE_EVERY = timedelta(seconds=60)  # last_used_at is written at most this often per token
# Scopes narrow a token: "read-only" allows GET only; "hosts" and "vms" allow only their
# areas' routes (and the task routes); no scope = everything an administrator may do.
SCOPES: dict[str, str] = {
    "read-only": "GET requests only",
    "hosts": "host routes (/api/server/...)",
    "vms": "VM routes (/api/client/..., NAT, proxies, traffic, tasks)",
}
AREA_PREFIXES: dict[str, tuple[str, ...]] = {
    "hosts": ("/api/server/", "/api/tasks"),
    "vms": ("/api/client/", "/api/nat/", "/api/proxy/", "/api/traffic/", "/api/tasks"),
}


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class TokenRecord:
    """A named token as listed: never its secret or hash."""

    id: int
    name: str
    profile: str
    scopes: tuple[str, ...]
    prefix: str  # the secret's first characters, to recognise it
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def of(cls, row: ApiToken) -> TokenRecord:
        return cls(row.id, row.name, row.profile, tuple(row.scopes or ()), row.prefix, row.created_at,
                   row.expires_at, row.last_used_at, row.revoked_at)


@dataclass(frozen=True)
class NewToken:
    """A token just created, with its secret (``idcst_...``), which is never available again."""

    record: TokenRecord
    secret: str


def allowed(principal: Principal, method: str, path: str) -> bool:
    """May a token with ``principal.scopes`` call ``method path``?"""
    scopes = principal.scopes
    if not scopes:
        return True
    if "read-only" in scopes and method != "GET":
        return False
    areas = [s for s in scopes if s in AREA_PREFIXES]
    return not areas or any(path.startswith(p) for s in areas for p in AREA_PREFIXES[s])


class NamedTokens:
    def __init__(self, core: CoreContext) -> None:
        self.core = core
        self._known: dict[str, tuple[Principal, float, float]] = {}  # hash -> (who, expires, recheck at)
        self._last_use: dict[int, datetime] = {}
        core.db.listen(NAMED_TOKENS, self.forget)

    async def create(self, name: str, profile: str, scopes: Sequence[str], expires_in_days: int | None, *,
                     by: Principal | None = None) -> NewToken:
        """A new token, with its secret (shown this once); ``by`` is the administrator asking
        (audited), None for the CLI."""
        async with recorded(self.core, by, "token.create", name, profile):
            return await self._create(name, profile, scopes, expires_in_days)

    async def _create(self, name: str, profile: str, scopes: Sequence[str],
                      expires_in_days: int | None) -> NewToken:
        if profile not in PROFILES:
            raise errors.BadRequest(f"profile must be one of {', '.join(PROFILES)}")
        unknown = sorted(set(scopes) - set(SCOPES))
        if unknown:
            raise errors.BadRequest(f"unknown scopes {', '.join(unknown)}; known: {', '.join(SCOPES)}")
        secret = SECRET_PREFIX + secrets.token_urlsafe(32)
        expires = utcnow() + timedelta(days=expires_in_days) if expires_in_days else None
        row = ApiToken(name=name, profile=profile, scopes=sorted(set(scopes)), secret_hash=secret_hash(secret),
                       prefix=secret[:10], expires_at=expires)
        try:
            async with self.core.db.session() as s:
                s.add(row)
                await s.flush()
                record = TokenRecord.of(row)
        except IntegrityError:
            raise errors.Conflict(f"an API token named {name} already exists") from None
        return NewToken(record, secret)

    async def list(self) -> list[TokenRecord]:
        async with self.core.db.session() as s:
            return [TokenRecord.of(r) for r in (await s.execute(select(ApiToken).order_by(ApiToken.id))).scalars()]

    async def revoke(self, token_id: int, *, by: Principal | None = None) -> TokenRecord:
        """Revoke a token at once; ``by`` is the administrator asking (audited), None for the CLI."""
        async with recorded(self.core, by, "token.revoke", f"token {token_id}") as done, \
                self.core.db.session() as s:
            row = await s.get(ApiToken, token_id)
            if row is None:
                raise errors.NotFound(f"API token {token_id} does not exist")
            if row.revoked_at is None:
                row.revoked_at = utcnow()
            note(s, NAMED_TOKENS, token_id)
            record = TokenRecord.of(row)
            done.target = row.name
        self.forget({token_id})
        return record

    def forget(self, token_ids: set[int]) -> None:
        """Drop remembered checks of these tokens (revoked here or on another node)."""
        self._known = {h: v for h, v in self._known.items() if v[0].token_id not in token_ids}

    def forget_all(self) -> None:
        self._known.clear()

    async def authenticate(self, secret: str) -> Principal:
        digest = secret_hash(secret)
        now = time.time()
        known = self._known.get(digest)
        if known is None or known[2] <= now or (self.core.db.shared and not self.core.db.listening):
            known = await self._load(digest)
        principal, expires, _ = known
        if expires <= now:
            raise errors.TokenExpired("this API token has expired")
        await self._touch(principal)
        return principal

    async def _load(self, digest: str) -> tuple[Principal, float, float]:
        from idcs_core.services.auth import Principal

        self._known.pop(digest, None)
        async with self.core.db.session() as s:
            row = (await s.execute(select(ApiToken).where(ApiToken.secret_hash == digest))).scalar_one_or_none()
        if row is None or row.revoked_at is not None:
            raise errors.TokenInvalid("API token invalid or revoked")
        principal = Principal(None, f"token:{row.name}", True, via="named_token", dialect="billing",
                              profile=row.profile, scopes=tuple(row.scopes or ()), token_id=row.id)
        expires = row.expires_at.replace(tzinfo=UTC).timestamp() if row.expires_at else float("inf")
        entry = (principal, expires, time.time() + RECHECK_SECONDS)
        if len(self._known) > 10_000:
            self._known.clear()
        self._known[digest] = entry
        return entry

    async def _touch(self, principal: Principal) -> None:
        assert principal.token_id is not None
        now = utcnow()
        last = self._last_use.get(principal.token_id)
        if last is not None and now - last < LAST_USE_EVERY:
            return
        self._last_use[principal.token_id] = now
        async with self.core.db.session() as s:
            await s.execute(update(ApiToken).where(ApiToken.id == principal.token_id).values(last_used_at=now))


def with_profile(principal: Principal, profile: str) -> Principal:
    return replace(principal, profile=profile)
