"""The audit log keeps ``audit_keep_days`` days: pruned at start-up and then periodically."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, insert, select
from sqlalchemy.engine import Engine

from idcs_core import context
from idcs_core.config import sync_url
from idcs_core.db.models import AuditLog, utcnow
from idcs_core.db.session import upgrade
from idcs_core.plugins import PluginRegistry
from idcs_core.testing.databases import database_url, drop_postgres_schema
from idcs_core.testing.server import LiveServer


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    value = database_url(request.param, tmp_path)
    upgrade(value)
    yield value
    if request.param == "postgresql":
        drop_postgres_schema(value)


def add_entry(db: Engine, action: str, days_old: float) -> None:
    with db.begin() as conn:
        conn.execute(insert(AuditLog).values(ts=utcnow() - timedelta(days=days_old), action=action, level="INFO",
                                             username="", target="", result="success", detail="", source_ip=""))


def actions(db: Engine) -> set[str]:
    with db.connect() as conn:
        return set(conn.execute(select(AuditLog.action)).scalars())


def wait_gone(db: Engine, action: str, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if action not in actions(db):
            return True
        time.sleep(0.1)
    return False


def test_old_audit_entries_are_pruned(url: str, tmp_path: Path, registry: PluginRegistry,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(context, "AUDIT_PRUNE_SECONDS", 0.3)
    db = create_engine(sync_url(url))
    try:
        add_entry(db, "old.200", 200)
        add_entry(db, "old.91", 91)
        add_entry(db, "recent.10", 10)
        with LiveServer(tmp_path / "srv", database_url=url, plugins=registry) as srv:
            # at start-up: older than the default 90 days goes, the rest stays
            assert {"old.200", "old.91"}.isdisjoint(actions(db))
            assert "recent.10" in actions(db)
            admin = srv.admin()
            # while serving: an old entry written meanwhile goes at the next round
            add_entry(db, "old.late", 120)
            assert wait_gone(db, "old.late")
            # and each round reads the setting anew
            admin.post("/api/system/settings", {"audit_keep_days": 5})
            assert wait_gone(db, "recent.10")
            assert {"login", "settings.update"} <= actions(db)  # today's entries stay
            admin.close()
    finally:
        db.dispose()
