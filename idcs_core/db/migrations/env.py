"""Alembic environment: runs on the connection ``db.session.upgrade`` hands it."""

from alembic import context
from sqlalchemy import create_engine

from idcs_core.db.models import Base
from idcs_core.queue.schema import not_procrastinate  # the queue's tables are not our models

connection = context.config.attributes.get("connection")
if connection is None:  # `alembic` run by hand: IDCS_DATABASE_URL or the sqlalchemy.url option
    import os

    from idcs_core.config import Config, sync_url

    url = context.config.get_main_option("sqlalchemy.url") or sync_url(
        Config(database_url=os.environ.get("IDCS_DATABASE_URL")).db_url)
    with create_engine(url).begin() as conn:
        context.configure(connection=conn, target_metadata=Base.metadata, render_as_batch=True,
                          include_name=not_procrastinate)
        with context.begin_transaction():
            context.run_migrations()
else:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True,
                      include_name=not_procrastinate)
    with context.begin_transaction():
        context.run_migrations()
