"""Server configuration: where data lives, which database, how to listen.

Everything comes from arguments of ``idcs serve`` or ``IDCS_*`` environment
variables; runtime settings an admin may change live in the database
(``services/settings.py``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


def default_data_dir() -> Path:
    return Path(os.environ.get("IDCS_DATA_DIR", "data")).expanduser().resolve()


@dataclass
class Config:
    """Start-up configuration of one server process."""

    data_dir: Path = field(default_factory=default_data_dir)
    database_url: str | None = field(default_factory=lambda: os.environ.get("IDCS_DATABASE_URL"))
    host: str = "0.0.0.0"
    port: int = 1880
    # Public base URL used in console/terminal links; derived from the request when unset.
    public_url: str | None = field(default_factory=lambda: os.environ.get("IDCS_PUBLIC_URL"))
    token_ttl_seconds: int = int(os.environ.get("IDCS_TOKEN_TTL", str(12 * 3600)))
    # Seconds a fast engine call (status, list) may take before the host counts as offline.
    host_timeout: float = float(os.environ.get("IDCS_HOST_TIMEOUT", "5"))
    # Seconds a long operation (create, backup...) may take.
    task_timeout: float = float(os.environ.get("IDCS_TASK_TIMEOUT", "1800"))
    max_body_bytes: int = 1024 * 1024
    create_admin: bool = True
    # Password of the first admin account; generated and printed once when unset.
    admin_password: str | None = field(default_factory=lambda: os.environ.get("IDCS_ADMIN_PASSWORD"), repr=False)

    # On PostgreSQL: whether this process also runs queued tasks (``idcs serve --no-worker``: it does not),
    # how many at once, and its role and name in the nodes registry (``idcs cluster status``).
    run_worker: bool = True
    worker_concurrency: int = int(os.environ.get("IDCS_WORKER_CONCURRENCY", "4"))
    role: str = "api"
    node_name: str | None = field(default_factory=lambda: os.environ.get("IDCS_NODE_NAME"))
    # Seconds running tasks get to end when the process is asked to stop (then they are handed back).
    shutdown_grace: float = 5.0

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).expanduser().resolve()

    @property
    def db_url(self) -> str:
        """The SQLAlchemy async URL: the configured one, else SQLite in the data dir."""
        url = self.database_url or f"sqlite+aiosqlite:///{self.data_dir / 'idcs.db'}"
        return async_url(url)


def async_url(url: str) -> str:
    """Turn a plain database URL into the async driver SQLAlchemy needs."""
    if url.startswith("sqlite:///"):
        return "sqlite+aiosqlite:///" + url.removeprefix("sqlite:///")
    for prefix in ("postgresql://", "postgres://", "postgresql+psycopg2://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url.removeprefix(prefix)
    return url


def sync_url(url: str) -> str:
    """The synchronous twin of an async URL (Alembic and the CLI use it)."""
    return url.replace("sqlite+aiosqlite://", "sqlite://")
