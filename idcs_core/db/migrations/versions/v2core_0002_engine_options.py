"""engine contract v2: hosts.engine_options, the engine's options apart from the core's host settings

Every key of hosts.options that is not one of the core's own settings moves to engine_options.

Revision ID: v2core_0002_engine_options
Revises: v2core_0001_refs
Create Date: 2026-12-02 09:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = "v2core_0002_engine_options"
down_revision = "v2core_0001_refs"
branch_labels = None
depends_on = None

# idcs_core.services.host_options.CORE_SETTINGS when this migration was written
CORE_SETTINGS = ("ports_start", "ports_close", "public_addr", "server_plan", "proxy_endpoint", "token_any_port")

hosts = sa.table("hosts", sa.column("id", sa.Integer), sa.column("options", sa.JSON),
                 sa.column("engine_options", sa.JSON))


def upgrade() -> None:
    with op.batch_alter_table("hosts") as batch:
        batch.add_column(sa.Column("engine_options", sa.JSON(), nullable=False, server_default="{}"))
    bind = op.get_bind()
    for host_id, options in bind.execute(sa.select(hosts.c.id, hosts.c.options)).all():
        options = dict(options or {})
        engine = {k: v for k, v in options.items() if k not in CORE_SETTINGS}
        if engine:
            core = {k: v for k, v in options.items() if k in CORE_SETTINGS}
            bind.execute(hosts.update().where(hosts.c.id == host_id).values(options=core, engine_options=engine))


def downgrade() -> None:
    bind = op.get_bind()
    for host_id, options, engine in bind.execute(
            sa.select(hosts.c.id, hosts.c.options, hosts.c.engine_options)).all():
        if engine:
            bind.execute(hosts.update().where(hosts.c.id == host_id)
                         .values(options=dict(engine) | dict(options or {})))
    with op.batch_alter_table("hosts") as batch:
        batch.drop_column("engine_options")
