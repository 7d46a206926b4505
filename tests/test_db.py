"""The Alembic migrations build exactly the schema the models describe, on both databases."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from idcs_core.config import sync_url
from idcs_core.db.models import Base
from idcs_core.db.session import upgrade
from idcs_core.queue.schema import not_procrastinate
from idcs_core.testing.databases import database_url, drop_postgres_schema


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_migrations_match_models(db: str, tmp_path: Path) -> None:
    url = database_url(db, tmp_path)
    try:
        upgrade(url)
        upgrade(url)  # idempotent
        engine = create_engine(sync_url(url))
        with engine.connect() as conn:
            # procrastinate's tables (the task queue, PostgreSQL) are not our models
            context = MigrationContext.configure(conn, opts={"include_name": not_procrastinate})
            diff = compare_metadata(context, Base.metadata)
            tables = set(inspect(conn).get_table_names())
        engine.dispose()
        assert diff == [], f"models and migrations differ: {diff}"
        assert {"users", "hosts", "vms", "nat_rules", "tasks", "audit_log", "sessions"} <= tables
    finally:
        if db == "postgresql":
            drop_postgres_schema(url)
