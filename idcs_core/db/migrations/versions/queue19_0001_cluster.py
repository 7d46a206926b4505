"""cluster_nodes (the nodes registry) and, on PostgreSQL, procrastinate's schema (the task queue)

Revision ID: queue19_0001_cluster
Revises: ops18_0001_traffic
Create Date: 2026-12-02 13:30:00
"""

from alembic import op
import sqlalchemy as sa


revision = 'queue19_0001_cluster'
down_revision = 'ops18_0001_traffic'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('cluster_nodes',
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('hostname', sa.String(length=255), nullable=False),
    sa.Column('pid', sa.Integer(), nullable=False),
    sa.Column('pid_started', sa.Float(), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('worker_id', sa.BigInteger(), nullable=True),
    sa.Column('started_at', sa.DateTime(), nullable=False),
    sa.Column('last_seen', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_cluster_nodes')),
    )
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        from idcs_core.queue import queue_available, schema

        if queue_available():  # else the queue runner is not used; it applies the schema if installed later
            schema.apply(bind)


def downgrade() -> None:
    # procrastinate's schema stays: dropping it would lose queued jobs
    op.drop_table('cluster_nodes')
