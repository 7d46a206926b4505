"""Database engine, sessions and schema upgrades.

One ``Database`` per server process: an async SQLAlchemy engine (aiosqlite for
the embedded SQLite default, psycopg for PostgreSQL) and a session factory.
The schema is created and upgraded by Alembic (``db/migrations``) at start-up
and by ``idcs db upgrade`` (on PostgreSQL under an advisory lock, so nodes starting
together upgrade once).

What a commit changed reaches every process on the same database: the in-process
listeners are called after the commit, and on PostgreSQL the commit also sends one
``NOTIFY`` (in its own transaction, so only if it commits) that the other nodes'
``db.bus.ChangeBus`` hands to the same listeners (``Database.apply_remote``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import TextClause, create_engine, event, inspect, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import ORMExecuteState, Session

from idcs_core.config import sync_url

log = logging.getLogger("idcs.db")

MIGRATIONS = Path(__file__).parent / "migrations"
WROTE = "idcs_wrote"
QUIET = "idcs_quiet"
NOTES = "idcs_notes"
AFTER_COMMIT = "idcs_after_commit"
# topics of ``note``: what a commit changed, for the caches of every process
USERS = "users"  # user rows or quota changed: cached user data goes (ids)
VMS = "vms"  # VMs deleted or given another owner: one-VM tokens bound to them go (ids)
USER_TOKENS = "user_tokens"  # every session of these users revoked, or their rights changed (ids)
JTIS = "jtis"  # these sessions revoked (JWT ids)
NAMED_TOKENS = "named_tokens"  # these named API tokens revoked (ids)
SETTINGS = "settings"  # runtime settings or the global API token changed (key names)
UPGRADE_LOCK = 7_193_019  # pg advisory lock key held while the schema is upgraded
NOTIFY_LIMIT = 7000  # bytes of a NOTIFY payload (PostgreSQL takes < 8000); more: "reload everything"
Listener = Callable[[set[Any]], None]


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
        session.info.setdefault(NOTES, {}).setdefault(VMS, set()).update(rebound)


@event.listens_for(TrackedSession, "do_orm_execute")
def _note_statement(state: ORMExecuteState) -> None:
    if state.is_select:
        return
    if isinstance(state.statement, TextClause) and state.statement.text.lstrip()[:7].upper() == "SELECT ":
        return
    state.session.info[WROTE] = True  # INSERT / UPDATE / DELETE, and any other textual statement


def note(session: AsyncSession, topic: str, value: Any) -> None:
    """Note that this transaction changes ``value`` of ``topic`` (``USERS``, ``JTIS``...): after
    the commit, every process's listeners of ``topic`` hear it (``Database.listen``)."""
    session.info.setdefault(NOTES, {}).setdefault(topic, set()).add(value)


def touch_user(session: AsyncSession, user_id: int | None) -> None:
    """Note that this transaction changes user ``user_id`` (caches drop it after the commit)."""
    if user_id is not None:
        note(session, USERS, user_id)


def quiet(session: AsyncSession) -> None:
    """This transaction writes only rows no cached read depends on (login counters, console
    tickets): its commit neither moves the generation nor wakes the other nodes."""
    session.info[QUIET] = True


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
        # PostgreSQL may have other nodes (or ``idcs`` commands) writing: caches learn of their
        # commits through NOTIFY (``db.bus``); SQLite has one server process
        self.shared = not self.is_sqlite
        self.node_id = uuid.uuid4().hex[:12]  # this process, in NOTIFY payloads and cluster views
        kwargs: dict[str, Any] = {}
        if not self.is_sqlite:
            kwargs.update(pool_size=10, max_overflow=20, pool_pre_ping=True)
        self.engine = create_async_engine(url, **kwargs)
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False, sync_session_class=TrackedSession)
        self._generation = 0
        # True while this process hears the other nodes' commits (``db.bus.ChangeBus`` sets it)
        self.listening = False
        self._channel: str | None = None
        # topic -> called after a commit (here or on another node) with what it changed
        self._listeners: dict[str, list[Listener]] = {}
        # called when this process may have missed other nodes' commits: drop every cache
        self.reset_listeners: list[Callable[[], None]] = []

    @property
    def generation(self) -> int:
        """Bumped after every commit that wrote something, here or (PostgreSQL) on another node.
        A value read at generation N is current while the generation is N. While another node's
        commits cannot be heard (the NOTIFY connection is down), it moves on at every read:
        nothing cached is trusted."""
        if self.shared and not self.listening:
            self._generation += 1
        return self._generation

    def listen(self, topic: str, listener: Listener) -> None:
        """Call ``listener(values)`` after each commit, by any process, that noted ``topic``."""
        self._listeners.setdefault(topic, []).append(listener)

    @property
    def user_listeners(self) -> list[Listener]:
        return self._listeners.setdefault(USERS, [])

    @property
    def vm_listeners(self) -> list[Listener]:
        return self._listeners.setdefault(VMS, [])

    async def channel(self) -> str:
        """The NOTIFY channel of this database and schema (channels are per database server
        database, so two schemas of one database must not share one)."""
        if self._channel is None:
            async with self.engine.connect() as conn:
                row = (await conn.execute(text("SELECT current_database(), current_schema()"))).one()
            self._channel = "idcs_" + hashlib.sha256(f"{row[0]}\0{row[1]}".encode()).hexdigest()[:20]
        return self._channel

    def _payload(self, notes: dict[str, set[Any]]) -> str:
        body = orjson.dumps({"o": self.node_id, "n": {k: sorted(v) for k, v in notes.items()}}).decode()
        if len(body) > NOTIFY_LIMIT:  # too much to say: the others drop everything
            body = orjson.dumps({"o": self.node_id, "all": True}).decode()
        return body

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session whose transaction commits on success and rolls back on error."""
        async with self.sessions() as s:
            async with s.begin():
                yield s
                if self.shared:
                    await s.flush()  # what is still pending counts as written (sets WROTE)
                if self.shared and s.info.get(WROTE) and not s.info.get(QUIET):
                    # in the transaction: sent when (and only if) it commits
                    await s.execute(text("SELECT pg_notify(:channel, :payload)"),
                                    {"channel": await self.channel(), "payload": self._payload(s.info.get(NOTES, {}))})
            wrote = s.info.pop(WROTE, False) and not s.info.pop(QUIET, False)
            if wrote:
                self._generation += 1
            for topic, values in s.info.pop(NOTES, {}).items():
                self._call(topic, values)
            for action in s.info.pop(AFTER_COMMIT, ()):
                action()

    def _call(self, topic: str, values: set[Any]) -> None:
        for listener in self._listeners.get(topic, ()):
            try:
                listener(values)
            except Exception:  # one cache's failure must not fail the commit that already happened
                log.exception("listener of %s failed", topic)

    def apply_remote(self, payload: str) -> None:
        """Another node committed (a NOTIFY payload of ``session``): move the generation on and
        tell the listeners what it changed."""
        try:
            data = orjson.loads(payload)
        except orjson.JSONDecodeError:
            data = {"all": True}
        if data.get("o") == self.node_id:
            return
        self._generation += 1
        if data.get("all"):
            self.reset()
            return
        for topic, values in (data.get("n") or {}).items():
            self._call(topic, set(values))

    def reset(self) -> None:
        """Drop every cache: this process may have missed commits of other nodes."""
        self._generation += 1
        for listener in self.reset_listeners:
            try:
                listener()
            except Exception:
                log.exception("cache reset failed")

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
            if conn.dialect.name == "postgresql":  # nodes starting together: one upgrades, the others wait
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": UPGRADE_LOCK})
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    finally:
        engine.dispose()
