"""proxies: the upstream the core's reverse proxy (Caddy) dials

Revision ID: caddy_0003_proxy_upstream
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "caddy_0003_proxy_upstream"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("proxies", schema=None) as batch_op:
        batch_op.add_column(sa.Column("upstream", sa.String(length=300), server_default="", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("proxies", schema=None) as batch_op:
        batch_op.drop_column("upstream")
