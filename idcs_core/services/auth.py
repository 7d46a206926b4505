"""Who is calling: login, logout, JWT sessions, the global API token, temporary VM tokens.

Tokens are JWTs whose ``jti`` names a row of ``sessions``; logout marks that row
revoked, so the token stops working at once. A token that was checked once
(signature, expiry, session row) is remembered in memory for at most
``TOKEN_RECHECK_SECONDS`` (and never past its expiry), so most authenticated
requests cost one dict look-up instead of a JWT decode and a query. Changes made
through this process (logout, password change, user change) drop the entry at
once; on PostgreSQL so do those of every other node and ``idcs`` command, heard
through the commit's NOTIFY (``db.bus``). While that cannot be heard (SQLite with
an ``idcs user passwd`` beside the server, or the NOTIFY connection down) a
change takes effect within ``TOKEN_RECHECK_SECONDS``; on PostgreSQL nothing
remembered is used meanwhile.

Failed logins are throttled per source address and per account
(``services/throttle.py``). One-VM temporary tokens (kind ``temp``) are exchanged
once for a session that ends when the temp token would have (``exchange_temp``).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import CursorResult, func, select, update

from idcs_core import errors, security
from idcs_core.db.models import VM, Session, Setting, User, utcnow
from idcs_core.db.session import JTIS, SETTINGS, USER_TOKENS, note
from idcs_core.security import constant_time_equal
from idcs_core.services import audit, throttle

if TYPE_CHECKING:
    from idcs_core.context import CoreContext
    from idcs_core.services.users import UserRecord

API_TOKEN_KEY = "api_token"
MAX_REMEMBERED = 100_000  # verified tokens kept in memory (cleared when full)
TOKEN_RECHECK_SECONDS = 5.0  # a remembered token is checked against its session row again after this


@dataclass(frozen=True)
class Principal:
    """The caller of a request. ``vm_id`` set: a temporary token limited to that VM."""

    user_id: int | None
    username: str
    is_admin: bool
    vm_id: int | None = None
    jti: str | None = None
    via: str = "jwt"
    # "contract" (API.md shapes) or "billing" (the billing modules' dialect, where the two differ)
    dialect: str = "contract"
    # the client profile of an API token (idcs_core.profiles); None for logins and one-VM tokens
    profile: str | None = None
    scopes: tuple[str, ...] = ()  # a named API token's scopes (services.api_tokens.SCOPES)
    token_id: int | None = None  # the named API token's id
    source_ip: str = ""  # where the request came from (set per request, for the audit log)

    def from_address(self, source_ip: str) -> Principal:
        """This caller, making a request from ``source_ip``.

        Every field copied as it is (a field added later comes along), without
        ``dataclasses.replace``, whose re-validation costs more than the rest of a cheap read's auth.
        """
        if source_ip == self.source_ip:
            return self
        caller = object.__new__(Principal)
        caller.__dict__.update(self.__dict__, source_ip=source_ip)
        return caller


API_TOKEN_PRINCIPAL = Principal(None, "api-token", True, via="api_token", dialect="billing", profile="openidcs")


class AuthService:
    def __init__(self, core: CoreContext) -> None:
        self.core = core
        self._tokens: dict[str, tuple[Principal, float]] = {}  # verified token -> (who, recheck at)
        self._checking: dict[str, asyncio.Future[Principal]] = {}  # token -> its check under way
        self._api_token: str | None = None
        self._users: dict[int, UserRecord] = {}  # user id -> what /api/users/current shows
        self.throttle = throttle.Throttle(core)
        core.db.user_listeners.append(self.forget_users)
        core.db.vm_listeners.append(self.forget_vms)
        # what any node (or ``idcs`` command) changed: see ``db.session.note``
        core.db.listen(USER_TOKENS, self._forget_users_fully)
        core.db.listen(JTIS, lambda jtis: self._forget(lambda p: p.jti in jtis))
        core.db.listen(SETTINGS, self._settings_changed)
        core.db.reset_listeners.append(self.forget_all)
        from idcs_core.services.api_tokens import NamedTokens

        self.named = NamedTokens(core)

    def forget_all(self) -> None:
        """Drop everything remembered (another node's changes may have been missed)."""
        self._tokens.clear()
        self._users.clear()
        self.named.forget_all()
        self.core.spawn(self.load())

    def _forget_users_fully(self, user_ids: set[int]) -> None:
        for user_id in user_ids:
            self.forget_user(user_id)

    def _settings_changed(self, keys: set[str]) -> None:
        if API_TOKEN_KEY in keys:
            self.core.spawn(self.load())

    # ------------------------------------------------------------------ checking

    def _api_token_principal(self) -> Principal:
        """The global API token speaks the profile chosen in setting ``api_token_profile``."""
        profile = self.core.settings.get("api_token_profile")
        if profile == API_TOKEN_PRINCIPAL.profile:
            return API_TOKEN_PRINCIPAL
        return Principal(None, "api-token", True, via="api_token", dialect="billing", profile=profile)

    async def load(self) -> None:
        """Read the global API token at start-up (creating one on first start)."""
        async with self.core.db.session() as s:
            row = await s.get(Setting, API_TOKEN_KEY)
            if row is None:
                row = Setting(key=API_TOKEN_KEY, value=self.core.keys.encrypt(security.generate_api_token()))
                s.add(row)
            self._api_token = self.core.keys.decrypt(row.value)

    async def authenticate(self, header: str | None) -> Principal:
        if not header:
            raise errors.Unauthorized("missing Authorization: Bearer <token>")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise errors.Unauthorized("use Authorization: Bearer <token>")
        if self._api_token and security.constant_time_equal(token, self._api_token):
            return self._api_token_principal()
        if token.startswith("idcst_"):
            return await self.named.authenticate(token)
        known = self._tokens.get(token)
        if known is not None and known[1] > time.time() and (self.core.db.listening or not self.core.db.shared):
            return known[0]
        # one check per token at a time: the requests of a busy client arriving while its
        # token is (re)checked wait for that one check instead of each querying the database
        pending = self._checking.get(token)
        if pending is not None:
            return await asyncio.shield(pending)
        fut: asyncio.Future[Principal] = asyncio.get_running_loop().create_future()
        self._checking[token] = fut
        try:
            principal = await self._verify(token)
        except asyncio.CancelledError:
            fut.cancel()
            raise
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # retrieved here: waiters, if any, get it too
            raise
        else:
            fut.set_result(principal)
            return principal
        finally:
            self._checking.pop(token, None)

    async def _verify(self, token: str) -> Principal:
        """Check a token's signature, expiry and session row; remember the result for a while."""
        self._tokens.pop(token, None)
        claims = self.core.keys.decode_token(token)
        principal, expires = await self._load_session(claims.jti)
        if len(self._tokens) >= MAX_REMEMBERED:
            self._tokens.clear()
        self._tokens[token] = (principal, min(expires, time.time() + TOKEN_RECHECK_SECONDS))
        return principal

    async def _load_session(self, jti: str) -> tuple[Principal, float]:
        async with self.core.db.session() as s:
            row = (await s.execute(select(Session, User, VM.owner_id)
                                   .outerjoin(User, User.id == Session.user_id)
                                   .outerjoin(VM, VM.id == Session.vm_id)
                                   .where(Session.jti == jti))).first()
        if row is None or (row[0].user_id is not None and row[1] is None):
            raise errors.TokenInvalid("token invalid (unknown session or deleted user)")
        sess, user, vm_owner = row
        if sess.vm_id is not None and vm_owner != sess.user_id:  # the VM changed hands since the token
            raise errors.TokenInvalid("token invalid (the virtual machine has another owner now)")
        if sess.revoked:
            raise errors.TokenInvalid("token has been revoked (logged out)")
        if sess.expires_at < utcnow():
            raise errors.TokenExpired()
        if user is None:  # a one-VM token for a VM without owner
            principal = Principal(None, f"vm-token-{sess.vm_id}", False, sess.vm_id, jti, dialect=sess.dialect)
        else:
            principal = Principal(user.id, user.username, user.is_admin and sess.vm_id is None, sess.vm_id, jti,
                                  dialect=sess.dialect)
        return principal, sess.expires_at.replace(tzinfo=UTC).timestamp()

    def _forget(self, match: Any) -> None:
        for token in [t for t, (p, _) in self._tokens.items() if match(p)]:
            self._tokens.pop(token, None)

    def forget_user(self, user_id: int) -> None:
        """Drop remembered tokens and data of a user whose rights or existence changed."""
        self._forget(lambda p: p.user_id == user_id)
        self._users.pop(user_id, None)

    def forget_vms(self, vm_ids: set[int]) -> None:
        """Drop remembered one-VM tokens of VMs that were deleted or changed owner."""
        self._forget(lambda p: p.vm_id in vm_ids)

    def forget_users(self, user_ids: set[int]) -> None:
        """Drop remembered data (not tokens) of users whose rows or quota changed."""
        for user_id in user_ids:
            self._users.pop(user_id, None)

    async def user_data(self, user_id: int) -> UserRecord:
        """The user as ``/api/users/current`` shows it, remembered until the user changes."""
        data = self._users.get(user_id)
        if data is None:
            from idcs_core.services.users import UserRecord, get_user

            async with self.core.db.session() as s:
                data = UserRecord.of(await get_user(s, user_id))
            self._users[user_id] = data
        return data

    # ------------------------------------------------------------------ login

    async def login(self, username: str, password: str, source_ip: str, dialect: str = "contract") -> dict[str, Any]:
        """Check a user name and password, throttled per source address and per account
        (``idcs_core.services.throttle``): a locked account still lets in the right password
        from an address that has not failed for it."""
        await self.throttle.check(source_ip, username)
        async with self.core.db.session() as s:
            user = (await s.execute(select(User).where(func.lower(User.username) == username.lower()))
                    ).scalar_one_or_none()
        # verify off the event loop: argon2 takes tens of milliseconds by design
        valid = await self.core.run_sync(security.verify_password,
                                         user.password_hash if user else security.DUMMY_HASH, password)
        if user is None or not valid:
            await self.throttle.failed(source_ip, username)
            if user is None:  # the typed name is not stored: it may be a password typed in the wrong field
                await self.core.audit(None, "login", "(unknown user)", "failed",
                                      f"unknown user name (ref {throttle.account_key(username)[:12]})", source_ip)
                raise errors.UserNotFound()
            await self.core.audit(None, "login", user.username, "failed", "wrong password", source_ip)
            raise errors.WrongPassword()
        await self.throttle.succeeded(source_ip, username)
        token = await self.issue(user.id, source_ip, dialect=dialect)
        await self.core.audit(Principal(user.id, user.username, user.is_admin), "login", user.username,
                              "success", "", source_ip)
        await self.core.plugins.emit("user_logged_in",
                                     user={"id": user.id, "username": user.username, "is_admin": user.is_admin},
                                     source_ip=source_ip)
        return {"token": token[0], "user_id": user.id, "username": user.username, "is_admin": user.is_admin}

    async def check_api_token_login(self, token: str, source_ip: str) -> None:
        """``login_type: token``: the global API token, throttled per source address like passwords."""
        await self.throttle.check(source_ip, None)
        if not constant_time_equal(token, self.api_token):
            await self.throttle.failed(source_ip, None)
            await self.core.audit(None, "login", "api-token", "failed", "wrong API token", source_ip)
            raise errors.TokenInvalid("the API token is wrong")

    async def issue(self, user_id: int | None, source_ip: str = "", vm_id: int | None = None,
                    ttl: int | None = None, dialect: str = "contract", kind: str | None = None) -> tuple[str, int]:
        """A new session token; returns (token, expiry as epoch seconds).

        ``kind`` defaults to ``temp`` for a one-VM token (exchangeable once at
        ``/api/client/templogin``) and ``login`` otherwise."""
        ttl = ttl or int(self.core.settings.get("token_ttl_seconds"))
        kind = kind or ("temp" if vm_id is not None else "login")
        token, claims = self.core.keys.issue_token(user_id or 0, ttl, vm_id)
        async with self.core.db.session() as s:
            s.add(Session(jti=claims.jti, user_id=user_id, vm_id=vm_id, expires_at=claims.expires_at,
                          source_ip=source_ip[:64], dialect=dialect, kind=kind))
        return token, int(claims.expires_at.replace(tzinfo=UTC).timestamp())

    async def exchange_temp(self, raw: str, source_ip: str) -> tuple[str, int, int]:
        """Swap a temporary one-VM token for a session on that VM: (token, expiry, vm id).

        Only a token of kind ``temp`` is taken, and only once (one conditional UPDATE marks it
        used, so two parallel exchanges cannot both succeed); the session ends when the temp
        token would have (it never outlives it) and is itself not exchangeable."""
        claims = self.core.keys.decode_token(raw)
        now = utcnow()
        async with self.core.db.session() as s:
            sess = await s.get(Session, claims.jti)
            if sess is None or sess.kind != "temp" or sess.vm_id is None:
                raise errors.TokenInvalid("only a temporary VM token can be exchanged")
            if sess.revoked:
                raise errors.TokenInvalid("this temporary token has been used or revoked")
            if sess.expires_at <= now:
                raise errors.TokenExpired()
            used = await s.execute(update(Session).where(Session.jti == claims.jti, Session.revoked.is_(False))
                                   .values(revoked=True))
            if cast("CursorResult[Any]", used).rowcount != 1:
                raise errors.TokenInvalid("this temporary token has been used or revoked")
            note(s, JTIS, claims.jti)
            vm = await s.get(VM, sess.vm_id)
            if vm is None or vm.owner_id != sess.user_id:
                raise errors.TokenInvalid("the virtual machine of this token is gone or has a new owner")
            user_id, vm_id, dialect, ends = sess.user_id, sess.vm_id, sess.dialect, sess.expires_at
        self._forget(lambda p: p.jti == claims.jti)
        ttl = int((ends - now).total_seconds())
        if ttl < 1:
            raise errors.TokenExpired()
        token, expire = await self.issue(user_id, source_ip, vm_id=vm_id, ttl=ttl, dialect=dialect,
                                         kind="temp_session")
        return token, expire, vm_id

    async def logout(self, principal: Principal) -> bool:
        """End the session (audited); False for the global API token, which has none (reset it to
        end it)."""
        async with audit.recorded(self.core, principal, "logout", principal.username) as done:
            if principal.jti is None:
                done.detail = "API token: nothing to end"
                return False
            async with self.core.db.session() as s:
                sess = await s.get(Session, principal.jti)
                if sess is not None:
                    sess.revoked = True
                    note(s, JTIS, principal.jti)
            self._forget(lambda p: p.jti == principal.jti)
        return True

    async def revoke_user_sessions(self, user_id: int) -> None:
        async with self.core.db.session() as s:
            for sess in (await s.execute(select(Session).where(Session.user_id == user_id))).scalars():
                sess.revoked = True
            note(s, USER_TOKENS, user_id)
        self.forget_user(user_id)

    # ------------------------------------------------------------------ global API token

    @property
    def api_token(self) -> str:
        assert self._api_token is not None
        return self._api_token

    async def set_api_token(self, token: str, *, by: Principal | None = None, action: str = "token.set") -> str:
        """Replace the global API token; ``by`` is the administrator asking (audited as ``action``:
        ``token.set``, or ``token.reset`` for a generated one), None for the CLI."""
        async with audit.recorded(self.core, by, action, "api-token"), self.core.db.session() as s:
            row = await s.get(Setting, API_TOKEN_KEY)
            if row is None:
                s.add(Setting(key=API_TOKEN_KEY, value=self.core.keys.encrypt(token)))
            else:
                row.value = self.core.keys.encrypt(token)
            note(s, SETTINGS, API_TOKEN_KEY)
        self._api_token = token
        return token
