"""broker reasons per job, queue software tags and last pilot, endpoint blacklist

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 21:05:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import dawms.catalog.models

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.add_column(sa.Column('broker_reasons', sa.JSON(), nullable=True))
    with op.batch_alter_table('queue', schema=None) as batch_op:
        batch_op.add_column(sa.Column('software', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('last_pilot_at',
                                      dawms.catalog.models.UTCDateTime(timezone=True),
                                      nullable=True))
    # existing endpoints get 0; the default is dropped in a second batch (on SQLite one
    # batch would copy the old rows into the new table without it)
    with op.batch_alter_table('storage_endpoint', schema=None) as batch_op:
        batch_op.add_column(sa.Column('blacklisted', sa.Integer(), nullable=False,
                                      server_default='0'))
    with op.batch_alter_table('storage_endpoint', schema=None) as batch_op:
        batch_op.alter_column('blacklisted', server_default=None)


def downgrade() -> None:
    with op.batch_alter_table('storage_endpoint', schema=None) as batch_op:
        batch_op.drop_column('blacklisted')
    with op.batch_alter_table('queue', schema=None) as batch_op:
        batch_op.drop_column('last_pilot_at')
        batch_op.drop_column('software')
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.drop_column('broker_reasons')
