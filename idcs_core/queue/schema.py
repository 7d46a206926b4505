"""procrastinate's tables and functions in our database, applied by our Alembic migration.

``idcs db upgrade`` (and every start, which upgrades first) runs migration
``queue19_0001_cluster``, which calls ``apply`` on PostgreSQL: it creates procrastinate's
schema once (it is absent when ``procrastinate_jobs`` does not exist). A database upgraded
before procrastinate was installed gets it at the queue runner's start (``apply`` again,
idempotent). procrastinate's own later migrations (a major upgrade of the library) are
applied by a new migration of ours, from ``procrastinate/sql/migrations``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from sqlalchemy import text


def present(conn: Any) -> bool:
    """Whether procrastinate's schema exists where ``conn``'s search_path points."""
    return conn.execute(text("SELECT to_regclass('procrastinate_jobs') IS NOT NULL")).scalar() is True


def apply(conn: Any) -> bool:
    """Create procrastinate's schema on the synchronous connection ``conn`` unless present;
    return whether it was created. Needs procrastinate installed."""
    from procrastinate.schema import SchemaManager

    if present(conn):
        return False
    # the script contains % signs: doubled, as the driver reads placeholders in every statement
    conn.exec_driver_sql(SchemaManager.get_schema().replace("%", "%%"), ())
    return True


def conninfo(db_url: str) -> str:
    """libpq's URI for an SQLAlchemy PostgreSQL URL (``postgresql+psycopg://`` → ``postgresql://``),
    keeping the query (e.g. ``options=-csearch_path=...``)."""
    parts = urlsplit(db_url)
    scheme = "postgresql"
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query)])
    return urlunsplit((scheme, parts.netloc, parts.path, query, parts.fragment))


def not_procrastinate(name: str | None, type_: str, parent_names: Any) -> bool:
    """Alembic ``include_name``: procrastinate's tables are its own, not our models' (autogenerate
    and the models-vs-migrations check leave them out)."""
    return not (type_ == "table" and (name or "").startswith("procrastinate_"))
