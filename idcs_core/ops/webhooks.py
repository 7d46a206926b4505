"""Webhooks: every event POSTed as signed JSON to the subscribed URLs, retried with back-off.

``WebhookDispatcher`` is an event plugin. For each event it writes one delivery row per webhook
that wants the event (state ``pending``, the exact body), then sends it; a try that fails
(connection error or a status other than 2xx) is repeated after ``webhook_backoff_seconds`` x
2^(try-1), up to ``webhook_max_attempts`` tries, then the delivery is ``failed``. Deliveries still
pending when the server stopped are resumed at start-up. Signing: ``ops.signing``.

Several nodes on one PostgreSQL: an event is recorded by the node that raised it (the others'
live streams hear it, not their dispatchers), and each try is claimed before it is sent: one
conditional UPDATE (on the ``attempts`` and ``next_try_at`` the node read) pushes ``next_try_at``
past the try's timeout (``claim_seconds``), so of the nodes that resumed a delivery only one sends each try.
Should that node die mid-try, another takes the delivery over once the claim has run out.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

import httpx
import orjson
from sqlalchemy import CursorResult, delete, select, update

from idcs_core import errors
from idcs_core.db.models import Webhook, WebhookDelivery, utcnow
from idcs_core.ops import signing
from idcs_core.ops.listener import EVENT_NAMES, Event, EventListener
from idcs_core.services.audit import recorded

if TYPE_CHECKING:
    from idcs_core.context import CoreContext
    from idcs_core.services.auth import Principal

log = logging.getLogger("idcs.webhooks")

MAX_PARALLEL = 8  # deliveries sent at the same time
USER_AGENT = "OpenIDCS-Webhooks/1"


def webhook_dict(hook: Webhook) -> dict[str, Any]:
    return {"id": hook.id, "url": hook.url, "description": hook.description, "events": list(hook.events or []),
            "created_at": hook.created_at}


def delivery_dict(d: WebhookDelivery) -> dict[str, Any]:
    return {"id": d.id, "webhook_id": d.webhook_id, "event_id": d.event_id, "event": d.event, "state": d.state,
            "attempts": d.attempts, "last_status": d.last_status, "last_error": d.last_error,
            "created_at": d.created_at, "updated_at": d.updated_at, "next_try_at": d.next_try_at}


def check_url(url: str) -> str:
    """An http(s) URL with a host and no credentials in it (they would end up in logs)."""
    url = url.strip()
    if len(url) > 2000:
        raise errors.BadRequest("url: at most 2000 characters")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise errors.BadRequest("url: an http:// or https:// URL with a host is needed")
    if parts.username or parts.password:
        raise errors.BadRequest("url: must not carry a user name or password")
    if any(c.isspace() or ord(c) < 32 for c in url):
        raise errors.BadRequest("url: must not contain spaces or control characters")
    return url


def check_events(events: list[str]) -> list[str]:
    unknown = [e for e in events if e not in EVENT_NAMES]
    if unknown:
        raise errors.BadRequest(f"events: unknown {unknown[0]!r:.60}; known: {', '.join(EVENT_NAMES)}")
    return sorted(set(events))


async def create_webhook(core: CoreContext, principal: Principal, url: str, events: list[str],
                         description: str) -> dict[str, Any]:
    """Subscribe ``url``; the answer holds the signing secret, shown this once only."""
    async with recorded(core, principal, "webhook.create", "webhook") as done:
        url, events = check_url(url), check_events(events)
        secret = "whsec_" + secrets.token_urlsafe(32)
        async with core.db.session() as s:
            hook = Webhook(url=url, events=events, description=description, secret_enc=core.keys.encrypt(secret))
            s.add(hook)
            await s.flush()
            data = webhook_dict(hook)
        done.target = f"webhook {hook.id}"
        return data | {"secret": secret}


async def list_webhooks(core: CoreContext) -> list[dict[str, Any]]:
    async with core.db.session() as s:
        return [webhook_dict(h) for h in (await s.execute(select(Webhook).order_by(Webhook.id))).scalars()]


async def delete_webhook(core: CoreContext, principal: Principal, webhook_id: int) -> None:
    async with recorded(core, principal, "webhook.delete", f"webhook {webhook_id}"):
        async with core.db.session() as s:
            hook = await s.get(Webhook, webhook_id)
            if hook is None:
                raise errors.NotFound(f"webhook {webhook_id} does not exist")
            await s.execute(delete(WebhookDelivery).where(WebhookDelivery.webhook_id == webhook_id))
            await s.delete(hook)


async def list_deliveries(core: CoreContext, webhook_id: int, limit: int) -> list[dict[str, Any]]:
    async with core.db.session() as s:
        if await s.get(Webhook, webhook_id) is None:
            raise errors.NotFound(f"webhook {webhook_id} does not exist")
        rows = (await s.execute(select(WebhookDelivery).where(WebhookDelivery.webhook_id == webhook_id)
                                .order_by(WebhookDelivery.id.desc()).limit(limit))).scalars()
        return [delivery_dict(d) for d in rows]


async def prune_deliveries(core: CoreContext) -> int:
    """Delete finished deliveries older than the ``audit_keep_days`` setting; return how many."""
    cutoff = utcnow() - timedelta(days=int(core.settings.get("audit_keep_days")))
    async with core.db.session() as s:
        result = await s.execute(delete(WebhookDelivery).where(WebhookDelivery.state != "pending",
                                                               WebhookDelivery.updated_at < cutoff))
    return int(getattr(result, "rowcount", 0) or 0)


def _json_default(value: Any) -> Any:
    return str(value)


class WebhookDispatcher(EventListener):
    """The event plugin that records and sends deliveries."""

    def __init__(self, core: CoreContext, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.core = core
        self.http = httpx.AsyncClient(headers={"User-Agent": USER_AGENT}, follow_redirects=False)
        self.slots = asyncio.Semaphore(MAX_PARALLEL)
        self.sending: set[int] = set()

    async def close(self) -> None:
        await self.http.aclose()

    async def on_event(self, event: Event) -> None:
        body = orjson.dumps(event.document(), default=_json_default).decode()
        made: list[int] = []
        async with self.core.db.session() as s:
            hooks = list((await s.execute(select(Webhook))).scalars())
            for hook in hooks:
                if hook.events and event.name not in hook.events:
                    continue
                row = WebhookDelivery(webhook_id=hook.id, event_id=event.id, event=event.name, body=body,
                                      state="pending", attempts=0, last_error="", next_try_at=utcnow())
                s.add(row)
                await s.flush()
                made.append(row.id)
        for delivery_id in made:
            self.start(delivery_id)

    def start(self, delivery_id: int) -> None:
        if delivery_id not in self.sending:
            self.sending.add(delivery_id)
            self.core.spawn(self._deliver(delivery_id))

    async def resume(self, overdue_only: bool = False) -> int:
        """Send again what a stopped server left pending; return how many. ``overdue_only``:
        those whose next try is overdue (a dead node's claims), not yet sent by this process."""
        query = select(WebhookDelivery.id).where(WebhookDelivery.state == "pending")
        if overdue_only:
            query = query.where(WebhookDelivery.next_try_at < utcnow() - timedelta(seconds=self.claim_seconds()))
        async with self.core.db.session() as s:
            ids = [i for i in (await s.execute(query)).scalars() if i not in self.sending]
        for delivery_id in ids:
            self.start(delivery_id)
        return len(ids)

    def claim_seconds(self) -> float:
        """How long a claimed try may take before another node may send it again."""
        return float(self.core.settings.get("webhook_timeout_seconds")) + 30.0

    async def _claim(self, delivery_id: int, attempts: int, next_try_at: datetime | None) -> bool:
        """Take try ``attempts + 1`` of a delivery as read (``next_try_at``); False when another
        node took it meanwhile or it ended."""
        due = (WebhookDelivery.next_try_at.is_(None) if next_try_at is None
               else WebhookDelivery.next_try_at == next_try_at)
        async with self.core.db.session() as s:
            result = await s.execute(
                update(WebhookDelivery).where(WebhookDelivery.id == delivery_id, WebhookDelivery.state == "pending",
                                              WebhookDelivery.attempts == attempts, due)
                .values(next_try_at=utcnow() + timedelta(seconds=self.claim_seconds())))
        return cast("CursorResult[Any]", result).rowcount == 1

    async def _deliver(self, delivery_id: int) -> None:
        try:
            while await self._try_once(delivery_id):
                pass
        finally:
            self.sending.discard(delivery_id)

    async def _try_once(self, delivery_id: int) -> bool:
        """One try of one delivery; True when another try is due (after waiting for it)."""
        async with self.core.db.session() as s:
            row = await s.get(WebhookDelivery, delivery_id)
            hook = await s.get(Webhook, row.webhook_id) if row is not None else None
            if row is None or hook is None or row.state != "pending":
                return False
            wait = (row.next_try_at - utcnow()).total_seconds() if row.next_try_at else 0.0
            url, body, secret = hook.url, row.body.encode(), self.core.keys.decrypt(hook.secret_enc)
            event, event_id, attempt, planned = row.event, row.event_id, row.attempts + 1, row.next_try_at
        if wait > 0:
            await asyncio.sleep(wait)
        if not await self._claim(delivery_id, attempt - 1, planned):
            return False
        status, error = await self._post(url, body, secret, event, event_id, delivery_id, attempt)
        settings = self.core.settings
        delivered = status is not None and 200 <= status < 300
        last = attempt >= int(settings.get("webhook_max_attempts"))
        async with self.core.db.session() as s:
            row = await s.get(WebhookDelivery, delivery_id)
            if row is None or row.attempts != attempt - 1:  # deleted meanwhile, or taken over after a long try
                return False
            row.attempts, row.last_status, row.last_error, row.updated_at = attempt, status, error[:500], utcnow()
            if delivered:
                row.state, row.next_try_at = "success", None
            elif last:
                row.state, row.next_try_at = "failed", None
            else:
                delay = float(settings.get("webhook_backoff_seconds")) * 2 ** (attempt - 1)
                row.next_try_at = utcnow() + timedelta(seconds=delay)
        if not delivered:
            log.warning("webhook %s: %s delivery %d try %d failed: %s", urlsplit(url).hostname, event,
                        delivery_id, attempt, error or f"HTTP {status}")
        return not delivered and not last

    async def _post(self, url: str, body: bytes, secret: str, event: str, event_id: str, delivery_id: int,
                    attempt: int) -> tuple[int | None, str]:
        timestamp = int(time.time())
        headers = {"Content-Type": "application/json", "X-IDCS-Event": event, "X-IDCS-Event-Id": event_id,
                   "X-IDCS-Delivery": str(delivery_id), "X-IDCS-Attempt": str(attempt),
                   "X-IDCS-Timestamp": str(timestamp), "X-IDCS-Signature": signing.sign(secret, timestamp, body)}
        timeout = float(self.core.settings.get("webhook_timeout_seconds"))
        async with self.slots:
            try:
                resp = await self.http.post(url, content=body, headers=headers, timeout=timeout)
            except httpx.HTTPError as exc:
                return None, f"{type(exc).__name__}: {exc}"[:500]
        return resp.status_code, "" if 200 <= resp.status_code < 300 else f"HTTP {resp.status_code}"
