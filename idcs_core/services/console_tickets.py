"""One-time tickets for the console and terminal pages.

``/api/client/remote`` issues a ticket per page; the page carries it in its URL's
fragment (never sent to the server, so never in an access log) and hands it over in
the websocket's ``Sec-WebSocket-Protocol`` header. A ticket is:

- bound to the VM's database row (id, host, name, creation time, owner), the session
  (JWT ``jti``), named API token or global API token that asked, and the page kind (terminal or vnc);
- single-use: the first websocket that presents it consumes it;
- short: ``TICKET_TTL`` seconds to open the page.

When redeemed, the binding is checked against the database again, so a ticket dies
with logout and password change (the session is revoked), with the VM's delete (even
when a VM of the same name is created again) and with an owner change. An open console
checks it again every ``RECHECK_SECONDS`` (``api.console``) and closes when it fails.

Where tickets live: with SQLite (one server process) in its memory, so a restart drops them;
with PostgreSQL in table ``console_tickets``, so a ticket issued by one node opens on any
other (the node that receives the websocket opens the engine channel itself). Redeeming
there is one ``DELETE ... RETURNING``: of two nodes presented the same ticket, one gets it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, cast

from sqlalchemy import delete, select

from idcs_core import errors
from idcs_core.db.models import VM, ApiToken, ConsoleTicket, Host, Session, User, utcnow
from idcs_core.db.session import quiet
from idcs_core.engines import VMTarget
from idcs_core.services.lookup import vm_target

if TYPE_CHECKING:
    from idcs_core.context import CoreContext
    from idcs_core.services.auth import Principal

TICKET_TTL = 60  # seconds between /api/client/remote and opening the page
MAX_TICKETS = 10_000  # outstanding tickets kept; the oldest go first beyond this
TICKET_PROTOCOL = "idcs.ticket."  # websocket subprotocol prefix that carries the ticket

PageKind = Literal["terminal", "vnc"]


@dataclass(frozen=True)
class ConsoleGrant:
    """What a ticket allows: one page of ``kind`` on one VM, for whoever asked."""

    kind: PageKind
    vm_id: int
    host_id: int
    host_name: str
    vm_uuid: str
    vm_created_at: datetime
    owner_id: int | None
    user_id: int | None  # None for the global API token
    session_jti: str | None  # None for the global API token
    api_token_digest: str | None  # set for the global API token
    api_token_id: int | None  # set for a named API token (its revoke or expiry ends the ticket)
    expires: float  # time.time() deadline

    def stored(self) -> dict[str, Any]:
        """The grant as JSON (``console_tickets.grant``)."""
        return dataclasses.asdict(self) | {"vm_created_at": self.vm_created_at.isoformat()}

    @classmethod
    def from_stored(cls, data: dict[str, Any]) -> ConsoleGrant:
        return cls(**(data | {"vm_created_at": datetime.fromisoformat(data["vm_created_at"])}))


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class ConsoleTickets:
    def __init__(self, core: CoreContext) -> None:
        self.core = core
        self._tickets: dict[str, ConsoleGrant] = {}  # sha256(ticket) -> grant

    async def issue(self, principal: Principal, vm: VM, kind: PageKind) -> str:
        """A new ticket for ``principal`` (already allowed to use ``vm``) to open one ``kind`` page."""
        ticket = secrets.token_urlsafe(32)
        via_global_token = principal.jti is None and principal.token_id is None
        grant = ConsoleGrant(
            kind=kind, vm_id=vm.id, host_id=vm.host_id, host_name=vm.host.server_name, vm_uuid=vm.vm_uuid,
            vm_created_at=vm.created_at, owner_id=vm.owner_id, user_id=principal.user_id,
            session_jti=principal.jti, api_token_id=principal.token_id,
            api_token_digest=_digest(self.core.auth.api_token) if via_global_token else None,
            expires=time.time() + TICKET_TTL)
        if self.core.db.shared:
            async with self.core.db.session() as s:
                quiet(s)
                await s.execute(delete(ConsoleTicket).where(ConsoleTicket.expires < time.time()))
                s.add(ConsoleTicket(digest=_digest(ticket), grant=grant.stored(), expires=grant.expires))
        else:
            self._prune()
            self._tickets[_digest(ticket)] = grant
        return ticket

    def _prune(self) -> None:
        now = time.time()
        if len(self._tickets) >= MAX_TICKETS // 2:
            for key in [k for k, g in self._tickets.items() if g.expires < now]:
                del self._tickets[key]
        while len(self._tickets) >= MAX_TICKETS:
            del self._tickets[next(iter(self._tickets))]

    async def redeem(self, ticket: str, kind: PageKind) -> ConsoleGrant:
        """Consume ``ticket`` and return its grant if everything it is bound to still holds."""
        grant = await self._take(_digest(ticket)) if ticket else None
        if grant is None or grant.kind != kind:
            raise errors.TokenInvalid("this console link is not valid or was already used: open it again")
        if grant.expires < time.time():
            raise errors.TokenExpired("this console link has expired: open it again")
        await self.check_binding(grant)
        return grant

    async def _take(self, digest: str) -> ConsoleGrant | None:
        """Remove the ticket ``digest`` and return its grant; None when no such ticket is left."""
        if not self.core.db.shared:
            return self._tickets.pop(digest, None)
        async with self.core.db.session() as s:
            quiet(s)
            stored = (await s.execute(delete(ConsoleTicket).where(ConsoleTicket.digest == digest)
                                      .returning(ConsoleTicket.grant))).scalar_one_or_none()
        return ConsoleGrant.from_stored(cast("dict[str, Any]", stored)) if stored is not None else None

    async def open(self, ticket: str, kind: PageKind, source_ip: str) -> tuple[ConsoleGrant, VMTarget]:
        """Redeem ``ticket`` for a ``kind`` page and record the opening in the audit log; return the
        grant and the VM to open the page on. ``TokenInvalid`` when the host or VM has gone meanwhile."""
        grant = await self.redeem(ticket, kind)
        async with self.core.db.session() as s:
            host = await s.get(Host, grant.host_id)
            target = await vm_target(s, host, grant.vm_uuid) if host is not None else None
        if target is None:
            raise errors.TokenInvalid("this console link is no longer valid: open it again")
        await self.core.audit(None, f"vm.{kind}", f"{grant.host_name}/{grant.vm_uuid}",
                              detail=f"user {grant.user_id}" if grant.user_id is not None else "api token",
                              source_ip=source_ip)
        return grant, target

    async def check_binding(self, grant: ConsoleGrant) -> None:
        """Raise ``TokenInvalid`` unless the VM, its owner and the session that asked are as they were."""
        gone = errors.TokenInvalid("this console link is no longer valid: open it again")
        async with self.core.db.session() as s:
            vm = await s.get(VM, grant.vm_id)
            if (vm is None or vm.host_id != grant.host_id or vm.vm_uuid != grant.vm_uuid
                    or vm.created_at != grant.vm_created_at or vm.owner_id != grant.owner_id):
                raise gone
            if grant.api_token_id is not None:
                token = await s.get(ApiToken, grant.api_token_id)
                if (token is None or token.revoked_at is not None
                        or (token.expires_at is not None and token.expires_at < utcnow())):
                    raise gone
                return
            if grant.session_jti is None:
                current = self.core.auth.api_token
                if grant.api_token_digest is None or not secrets.compare_digest(_digest(current),
                                                                                grant.api_token_digest):
                    raise gone
                return
            row = (await s.execute(select(Session, User).outerjoin(User, User.id == Session.user_id)
                                   .where(Session.jti == grant.session_jti))).first()
            if row is None:
                raise gone
            sess, user = row
            if sess.revoked or sess.expires_at < utcnow() or sess.user_id != grant.user_id:
                raise gone
            if sess.vm_id is not None:  # a one-VM token: that VM only
                if sess.vm_id != grant.vm_id:
                    raise gone
            elif user is None or (vm.owner_id != user.id and not user.is_admin):
                raise gone
