"""Databases for tests: a fresh SQLite file, or a fresh schema in the local PostgreSQL.

``IDCS_TEST_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/test``) names
the server; each call makes its own schema, so tests never see each other's rows.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from urllib.parse import quote

from sqlalchemy import create_engine, text

POSTGRES_URL = os.environ.get("IDCS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def sqlite_url(folder: Path) -> str:
    return f"sqlite+aiosqlite:///{folder / 'idcs.db'}"


def fresh_postgres_url() -> str:
    """Create an empty schema and return a URL whose search_path points at it.

    Fails loudly when PostgreSQL is not reachable: the suite must run on both databases.
    """
    schema = f"idcs_t_{uuid.uuid4().hex[:12]}"
    engine = create_engine(POSTGRES_URL)
    try:
        with engine.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:
        raise RuntimeError(f"PostgreSQL at {POSTGRES_URL} is not usable ({exc}); start it with: "
                           "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start") from exc
    finally:
        engine.dispose()
    sep = "&" if "?" in POSTGRES_URL else "?"
    return f"{POSTGRES_URL}{sep}options={quote(f'-csearch_path={schema}')}"


def drop_postgres_schema(url: str) -> None:
    if "search_path%3D" not in url:
        return
    schema = url.split("search_path%3D", 1)[1].split("&", 1)[0]
    engine = create_engine(POSTGRES_URL)
    try:
        with engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    finally:
        engine.dispose()


def database_url(kind: str, folder: Path) -> str:
    if kind == "sqlite":
        return sqlite_url(folder)
    if kind == "postgresql":
        return fresh_postgres_url()
    raise ValueError(f"unknown database kind {kind}")
