"""engine contract v2: vms.ref, the back end's own id of a VM (VMInfo.ref)

Revision ID: v2core_0001_refs
Revises: ops_0003_operations
Create Date: 2026-12-02 09:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "v2core_0001_refs"
down_revision = "ops_0003_operations"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("vms") as batch:
        batch.add_column(sa.Column("ref", sa.String(length=255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("vms") as batch:
        batch.drop_column("ref")
