"""PostgreSQL LISTEN/NOTIFY between the nodes of one database: what another node committed
(``Database.apply_remote``) and the live events it raised (``ops.live``).

One dedicated connection per serving process listens; it is not taken from the pool, so a
busy pool never delays a notification. While it is down, ``Database.listening`` is False and
nothing cached is trusted (``Database.generation``); once it is back every cache is dropped
("when in doubt, reload"), because commits made meanwhile were not heard. It reconnects with a
back-off of up to ``MAX_BACKOFF`` seconds.

SQLite has one server process: there is no bus (``ChangeBus.start`` does nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

from idcs_core.db.session import Database

log = logging.getLogger("idcs.bus")

MAX_BACKOFF = 5.0
EVENTS_SUFFIX = "_ev"  # the live events' channel is the changes' channel with this suffix


def conninfo(url: str) -> str:
    """A libpq URI for a SQLAlchemy PostgreSQL URL (its query, e.g. ``options``, kept)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class ChangeBus:
    """The listening side of one process; senders use ``pg_notify`` in their own transactions."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        # called with each payload of the events channel sent by any node (this one included)
        self.event_handlers: list[Callable[[str], None]] = []

    async def start(self, timeout: float = 10.0) -> None:
        """Listen (PostgreSQL only); wait up to ``timeout`` s for the first connection."""
        if not self.db.shared:
            return
        await self.db.channel()
        self._ready.clear()
        self._task = asyncio.create_task(self._run(), name="idcs-change-bus")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), timeout)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.db.listening = False

    async def _run(self) -> None:
        backoff = 0.2
        first = True
        while True:
            try:
                await self._listen(first)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database restarted or the connection broke: listen again
                log.warning("change bus: connection lost (%s); caches are bypassed until it is back",
                            type(exc).__name__)
            self.db.listening = False
            first = False
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)

    async def _listen(self, first: bool) -> None:
        channel = await self.db.channel()
        conn = await psycopg.AsyncConnection.connect(conninfo(self.db.url), autocommit=True)
        try:
            await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
            await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel + EVENTS_SUFFIX)))
            if not first:
                log.info("change bus: listening again; every cache is reloaded")
            self.db.reset()  # commits made before LISTEN took effect were not heard
            self.db.listening = True
            self._ready.set()
            async for notice in conn.notifies():
                if notice.channel == channel:
                    self.db.apply_remote(notice.payload)
                else:
                    for handler in self.event_handlers:
                        try:
                            handler(notice.payload)
                        except Exception:
                            log.exception("change bus: an event handler failed")
        finally:
            self.db.listening = False
            with contextlib.suppress(Exception):
                await conn.close()
