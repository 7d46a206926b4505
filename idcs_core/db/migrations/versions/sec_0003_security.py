"""security: ids never reused, tasks -> users, host grants, login throttle in memory, session kinds,
user names unique without regard to case

Revision ID: sec_0003_security
Revises: crash_0003
Create Date: 2026-12-02 06:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = 'sec_0003_security'
down_revision = 'crash_0003'
branch_labels = None
depends_on = None

# every table with an integer id: SQLite AUTOINCREMENT, so a deleted row's id is never handed out again
ID_TABLES = ('users', 'hosts', 'vms', 'ip_addresses', 'nat_rules', 'proxies', 'disks', 'iso_mounts', 'backups',
             'audit_log', 'usage_samples', 'api_tokens', 'host_samples')


def upgrade() -> None:
    bind = op.get_bind()
    sqlite = bind.dialect.name == 'sqlite'
    if sqlite:
        # the batch copy drops and re-creates each table: foreign keys must not cascade meanwhile
        # (they are off on Alembic's own connection; this says so for hand-run upgrades too)
        op.execute('PRAGMA foreign_keys=OFF')
        for table in ID_TABLES:
            with op.batch_alter_table(table, recreate='always', table_kwargs={'sqlite_autoincrement': True}):
                pass

    # a task of a deleted user must not show up for a new user: a real foreign key
    op.execute('UPDATE tasks SET user_id = NULL WHERE user_id IS NOT NULL '
               'AND user_id NOT IN (SELECT id FROM users)')
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.create_foreign_key(batch_op.f('fk_tasks_user_id_users'), 'users', ['user_id'], ['id'],
                                    ondelete='SET NULL')

    with op.batch_alter_table('sessions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('kind', sa.String(length=16), server_default='login', nullable=False))
    # temporary one-VM tokens issued before this revision: exchangeable once like new ones
    op.execute("UPDATE sessions SET kind = 'temp' WHERE vm_id IS NOT NULL")

    op.create_table('host_grants',
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('host_id', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['host_id'], ['hosts.id'], name=op.f('fk_host_grants_host_id_hosts'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_host_grants_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('user_id', 'host_id', name=op.f('pk_host_grants'))
    )
    with op.batch_alter_table('host_grants', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_host_grants_host_id'), ['host_id'], unique=False)
    # users of an existing installation keep the hosts they already have VMs on
    op.execute('INSERT INTO host_grants (user_id, host_id, created_at) '
               'SELECT DISTINCT owner_id, host_id, CURRENT_TIMESTAMP FROM vms WHERE owner_id IS NOT NULL')

    # failed logins are counted in the server's memory now (services/throttle.py)
    op.drop_table('login_failures')

    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.create_index('uq_users_username_lower', [sa.text('lower(username)')], unique=True)


def downgrade() -> None:
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_index('uq_users_username_lower')
    op.create_table('login_failures',
    sa.Column('username', sa.String(length=64), nullable=False),
    sa.Column('failures', sa.Integer(), nullable=False),
    sa.Column('locked_until', sa.DateTime(), nullable=True),
    sa.PrimaryKeyConstraint('username', name=op.f('pk_login_failures'))
    )
    with op.batch_alter_table('host_grants', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_host_grants_host_id'))
    op.drop_table('host_grants')
    with op.batch_alter_table('sessions', schema=None) as batch_op:
        batch_op.drop_column('kind')
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_tasks_user_id_users'), type_='foreignkey')
