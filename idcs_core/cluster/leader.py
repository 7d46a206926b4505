"""One node leads the cluster's periodic work (NAT re-sync at a start, traffic sampling, audit and
webhook-log pruning, the queue's sweep): the one holding a PostgreSQL advisory lock.

The lock lives on a connection of its own; when the leader dies its connection closes,
the lock is free, and another node takes it within ``RETRY_SECONDS``. The key is derived
from the database and schema, so two installations on one server do not share a leader.
On SQLite (one process) this node always leads.

Periodic loops ask ``leads()`` before each round; ``on_lead`` callbacks run each time this
node becomes the leader (e.g. the NAT re-sync a node's start used to run).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from idcs_core.context import CoreContext

log = logging.getLogger("idcs.cluster")

RETRY_SECONDS = 2.0
LOCK_KEY_SQL = "hashtext(current_database() || '/' || current_schema() || ':idcs-leader')"


class ClusterLeader:
    def __init__(self, core: CoreContext) -> None:
        self.core = core
        self.single = core.db.is_sqlite
        self._leading = self.single
        self._conn: Any = None
        self._loop: asyncio.Task[None] | None = None
        self._callbacks: list[Callable[[], Awaitable[None]]] = []

    def leads(self) -> bool:
        return self._leading

    def on_lead(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Run ``callback`` (in the background) whenever this node becomes the leader."""
        self._callbacks.append(callback)

    async def start(self) -> None:
        """Try once to lead now (the first node leads from its start), then keep trying."""
        if self.single:
            self._became_leader()
            return
        await self._try()
        self._loop = asyncio.create_task(self._watch(), name="idcs-leader")

    def _became_leader(self) -> None:
        for callback in self._callbacks:
            self.core.spawn(callback())

    async def _try(self) -> None:
        import psycopg

        from idcs_core.queue.schema import conninfo

        try:
            if self._conn is None or self._conn.closed:
                self._conn = await psycopg.AsyncConnection.connect(conninfo(self.core.config.db_url), autocommit=True)
            if self._leading:
                await self._conn.execute("SELECT 1")  # still connected: still holding the lock
                return
            cur = await self._conn.execute(f"SELECT pg_try_advisory_lock({LOCK_KEY_SQL})")
            row = await cur.fetchone()
            if row and row[0]:
                self._leading = True
                log.info("this node now leads the cluster's periodic work")
                self._became_leader()
        except Exception as exc:
            if self._leading:
                log.warning("lost the cluster leadership (%s)", exc)
            self._leading = False
            if self._conn is not None:
                with contextlib.suppress(Exception):
                    await self._conn.close()
            self._conn = None

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(RETRY_SECONDS)
            await self._try()

    async def stop(self) -> None:
        if self._loop is not None:
            self._loop.cancel()
        self._leading = self.single
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()  # the lock goes with the connection
            self._conn = None
