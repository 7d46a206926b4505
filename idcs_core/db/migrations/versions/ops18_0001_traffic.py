"""traffic accounting (vm_traffic, traffic_daily) and per-host backup schedules

Revision ID: ops18_0001_traffic
Revises: ops_0003_operations
Create Date: 2026-12-02 09:40:00
"""

from alembic import op
import sqlalchemy as sa


revision = 'ops18_0001_traffic'
down_revision = "v2core_0002_engine_options"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('vm_traffic',
    sa.Column('vm_id', sa.Integer(), nullable=False),
    sa.Column('epoch', sa.String(length=128), nullable=False),
    sa.Column('rx_last', sa.BigInteger(), nullable=False),
    sa.Column('tx_last', sa.BigInteger(), nullable=False),
    sa.Column('sampled_at', sa.DateTime(), nullable=True),
    sa.Column('period_start', sa.DateTime(), nullable=False),
    sa.Column('period_rx', sa.BigInteger(), nullable=False),
    sa.Column('period_tx', sa.BigInteger(), nullable=False),
    sa.Column('over_action', sa.String(length=16), nullable=False),
    sa.ForeignKeyConstraint(['vm_id'], ['vms.id'], name=op.f('fk_vm_traffic_vm_id_vms'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('vm_id', name=op.f('pk_vm_traffic')),
    )
    op.create_table('traffic_daily',
    sa.Column('vm_id', sa.Integer(), nullable=False),
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('rx', sa.BigInteger(), nullable=False),
    sa.Column('tx', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['vm_id'], ['vms.id'], name=op.f('fk_traffic_daily_vm_id_vms'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('vm_id', 'day', name=op.f('pk_traffic_daily')),
    )
    with op.batch_alter_table('backup_schedules', schema=None) as batch_op:
        batch_op.alter_column('vm_id', existing_type=sa.Integer(), nullable=True)
        batch_op.add_column(sa.Column('host_id', sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f('ix_backup_schedules_host_id'), ['host_id'], unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_backup_schedules_host_id_hosts'), 'hosts', ['host_id'], ['id'],
                                    ondelete='CASCADE')


def downgrade() -> None:
    with op.batch_alter_table('backup_schedules', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_backup_schedules_host_id_hosts'), type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_backup_schedules_host_id'))
        batch_op.drop_column('host_id')
        batch_op.alter_column('vm_id', existing_type=sa.Integer(), nullable=False)
    op.drop_table('traffic_daily')
    op.drop_table('vm_traffic')
