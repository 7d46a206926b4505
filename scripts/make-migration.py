"""Generate an Alembic revision from the difference between the models and the migrations.

    python scripts/make-migration.py "add foo to hosts"

Runs the existing migrations on a scratch SQLite file, then autogenerates the next
revision into idcs_core/db/migrations/versions/. Read and edit the result before
committing (batch mode is on, so SQLite ALTERs work).
"""

import sys
import tempfile
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine

MIGRATIONS = Path(__file__).resolve().parent.parent / "idcs_core" / "db" / "migrations"


def main() -> None:
    message = sys.argv[1] if len(sys.argv) > 1 else "schema change"
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    heads = ScriptDirectory.from_config(cfg).get_heads()
    next_id = f"{int(heads[0]) + 1:04d}" if heads else "0001"
    with tempfile.TemporaryDirectory() as tmp:
        engine = create_engine(f"sqlite:///{tmp}/scratch.db")
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
            command.revision(cfg, message=message, autogenerate=True, rev_id=next_id)


if __name__ == "__main__":
    main()
