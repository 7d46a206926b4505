"""Database engine, sessions and schema upgrades.

One ``Database`` per server process: an async SQLAlchemy engine (aiosqlite for
the embedded SQLite default, psycopg for PostgreSQL) and a session factory.
The schema is created and upgraded by Alembic (``db/migrations``) at start-up
and by ``idcs db upgrade``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import TextClause, create_engine, event, inspect
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import ORMExecuteState, Session

from idcs_core.config import sync_url

MIGRATIONS = Path(__file__).parent / "migrations"
USERS_TOUCHED = "idcs_users_touched"
VMS_REBOUND = "idcs_vms_rebound"
WROTE = "idcs_wrote"
AFTER_COMMIT = "idcs_after_commit"


def after_commit(s: AsyncSession, action: Callable[[], None]) -> None:
    """Call ``action`` once the transaction of ``s`` (a ``Database.session``) has committed;
    never if it rolls back."""
    s.info.setdefault(AFTER_COMMIT, []).append(action)


class TrackedSession(Session):
    """A session that notes whether its transaction wrote anything (see ``Database.generation``)."""


@event.listens_for(TrackedSession, "before_flush")
def _note_flush(session: Session, _context: Any, _instances: Any) -> None:
    if session.new or session.dirty or session.deleted:
        session.info[WROTE] = True
    from idcs_core.db.models import VM

    rebound = {vm.id for vm in session.deleted if isinstance(vm, VM)}
    rebound |= {vm.id for vm in session.dirty
                if isinstance(vm, VM) and inspect(vm).attrs.owner_id.history.has_changes()}
    if rebound:  # VMs deleted or given to another owner: tokens bound to them must stop at once
        session.info.setdefault(VMS_REBOUND, set()).update(rebound)


@event.listens_for(TrackedSession, "do_orm_execute")
def _note_statement(state: ORMExecuteState) -> None:
    if state.is_select:
        return
    if isinstance(state.statement, TextClause) and state.statement.text.lstrip()[:7].upper() == "SELECT ":
        return
    state.session.info[WROTE] = True  # INSERT / UPDATE / DELETE, and any other textual statement


def touch_user(session: AsyncSession, user_id: int | None) -> None:
    """Note that this transaction changes user ``user_id`` (caches drop it after the commit)."""
    if user_id is not None:
        session.info.setdefault(USERS_TOUCHED, set()).add(user_id)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.close()


class Database:
    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        kwargs: dict[str, Any] = {}
        if not self.is_sqlite:
            kwargs.update(pool_size=10, max_overflow=20, pool_pre_ping=True)
        self.engine = create_async_engine(url, **kwargs)
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False, sync_session_class=TrackedSession)
        # Bumped after every commit that wrote something. One server process owns its
        # database, so a value read at generation N is current while the generation is N.
        self.generation = 0
        # Called after a commit with the ids of users whose rows (or quota) it changed.
        self.user_listeners: list[Callable[[set[int]], None]] = []
        # Called after a commit with the ids of VMs it deleted or gave another owner.
        self.vm_listeners: list[Callable[[set[int]], None]] = []

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session whose transaction commits on success and rolls back on error."""
        async with self.sessions() as s:
            async with s.begin():
                yield s
            if s.info.pop(WROTE, False):
                self.generation += 1
            touched = s.info.pop(USERS_TOUCHED, None)
            if touched:
                for listener in self.user_listeners:
                    listener(touched)
            rebound = s.info.pop(VMS_REBOUND, None)
            if rebound:
                for vm_listener in self.vm_listeners:
                    vm_listener(rebound)
            for action in s.info.pop(AFTER_COMMIT, ()):
                action()

    async def dispose(self) -> None:
        await self.engine.dispose()


def private_sqlite_files(path: Path) -> None:
    """Create the SQLite file owner-only (0600, like the key files) and tighten an existing one
    with its journal files; SQLite gives the -wal and -shm files the database file's mode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if str(path) in ("", ":memory:"):
        return
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for suffix in ("", "-wal", "-shm", "-journal"):
        candidate = Path(f"{path}{suffix}")
        if candidate.exists():
            candidate.chmod(0o600)


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the schema at ``url`` to ``revision`` (synchronous; run before serving)."""
    sync = sync_url(url)
    if sync.startswith("sqlite:///"):
        private_sqlite_files(Path(sync.removeprefix("sqlite:///")))
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    engine = create_engine(sync)
    try:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    finally:
        engine.dispose()
