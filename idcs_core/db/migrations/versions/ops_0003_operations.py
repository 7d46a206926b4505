"""operations: webhooks and their delivery log, backup schedules, backups.schedule_id

Revision ID: ops_0003_operations
Revises: 0002
Create Date: 2026-12-02 06:40:00
"""

from alembic import op
import sqlalchemy as sa


revision = 'ops_0003_operations'
down_revision = 'sec_0003_security'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('webhooks',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('url', sa.String(length=2000), nullable=False),
    sa.Column('description', sa.String(length=255), nullable=False),
    sa.Column('events', sa.JSON(), nullable=False),
    sa.Column('secret_enc', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_webhooks')),
    sqlite_autoincrement=True,
    )
    op.create_table('webhook_deliveries',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('webhook_id', sa.Integer(), nullable=False),
    sa.Column('event_id', sa.String(length=36), nullable=False),
    sa.Column('event', sa.String(length=64), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('last_status', sa.Integer(), nullable=True),
    sa.Column('last_error', sa.String(length=500), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.Column('next_try_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['webhook_id'], ['webhooks.id'], name=op.f('fk_webhook_deliveries_webhook_id_webhooks'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_deliveries')),
    sqlite_autoincrement=True,
    )
    with op.batch_alter_table('webhook_deliveries', schema=None) as batch_op:
        batch_op.create_index('ix_webhook_deliveries_webhook_id_id', ['webhook_id', 'id'], unique=False)
        batch_op.create_index('ix_webhook_deliveries_state', ['state'], unique=False)
    op.create_table('backup_schedules',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('vm_id', sa.Integer(), nullable=False),
    sa.Column('cron', sa.String(length=100), nullable=False),
    sa.Column('retention', sa.Integer(), nullable=False),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('next_run_at', sa.DateTime(), nullable=False),
    sa.Column('last_run_at', sa.DateTime(), nullable=True),
    sa.Column('last_state', sa.String(length=16), nullable=False),
    sa.Column('last_error', sa.String(length=500), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['vm_id'], ['vms.id'], name=op.f('fk_backup_schedules_vm_id_vms'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_backup_schedules')),
    sqlite_autoincrement=True,
    )
    with op.batch_alter_table('backup_schedules', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_backup_schedules_vm_id'), ['vm_id'], unique=False)
    with op.batch_alter_table('backups', schema=None) as batch_op:
        batch_op.add_column(sa.Column('schedule_id', sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('backups', schema=None) as batch_op:
        batch_op.drop_column('schedule_id')
    with op.batch_alter_table('backup_schedules', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_backup_schedules_vm_id'))
    op.drop_table('backup_schedules')
    with op.batch_alter_table('webhook_deliveries', schema=None) as batch_op:
        batch_op.drop_index('ix_webhook_deliveries_state')
        batch_op.drop_index('ix_webhook_deliveries_webhook_id_id')
    op.drop_table('webhook_deliveries')
    op.drop_table('webhooks')
