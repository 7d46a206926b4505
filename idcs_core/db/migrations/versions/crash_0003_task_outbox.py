"""tasks: outbox of event hooks to call once the task has ended

Revision ID: crash_0003
Revises: 0002
Create Date: 2026-12-02 06:30:00
"""

from alembic import op
import sqlalchemy as sa


revision = 'crash_0003'
down_revision = 'panel_host_samples'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.add_column(sa.Column('outbox', sa.JSON(none_as_null=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.drop_column('outbox')
