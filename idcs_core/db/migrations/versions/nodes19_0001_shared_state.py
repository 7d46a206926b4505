"""state every node shares: login counters and console tickets

Revision ID: nodes19_0001_shared_state
Revises: ops18_0001_traffic
Create Date: 2026-12-02 13:20:00
"""

from alembic import op
import sqlalchemy as sa


revision = 'nodes19_0001_shared_state'
down_revision = 'queue19_0001_cluster'  # chained after queue19's on the chaos19 merge
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('login_counters',
    sa.Column('key', sa.String(length=96), nullable=False),
    sa.Column('failures', sa.Integer(), nullable=False),
    sa.Column('window_start', sa.Float(), nullable=False),
    sa.Column('locked_until', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_login_counters')),
    )
    op.create_table('console_tickets',
    sa.Column('digest', sa.String(length=64), nullable=False),
    sa.Column('grant', sa.JSON(), nullable=False),
    sa.Column('expires', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('digest', name=op.f('pk_console_tickets')),
    )
    with op.batch_alter_table('console_tickets', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_console_tickets_expires'), ['expires'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('console_tickets', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_console_tickets_expires'))
    op.drop_table('console_tickets')
    op.drop_table('login_counters')
