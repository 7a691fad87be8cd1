"""stuck data requests and the last failure of each requested file

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 21:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import dawms.catalog.models

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # existing rows get 0 / ''; the models have no server defaults
    with op.batch_alter_table('data_request', schema=None) as batch_op:
        batch_op.add_column(sa.Column('stuck_count', sa.Integer(), nullable=False,
                                      server_default='0'))
        batch_op.add_column(sa.Column('progress_files', sa.Integer(), nullable=False,
                                      server_default='0'))
        batch_op.add_column(sa.Column('progress_at', dawms.catalog.models.UTCDateTime(
            timezone=True), nullable=True))
    with op.batch_alter_table('data_request_file', schema=None) as batch_op:
        batch_op.add_column(sa.Column('error', sa.Text(), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('failures', sa.Integer(), nullable=False,
                                      server_default='0'))
        batch_op.add_column(sa.Column('failed_at', dawms.catalog.models.UTCDateTime(
            timezone=True), nullable=True))
    for table, cols in (('data_request', ('stuck_count', 'progress_files')),
                        ('data_request_file', ('error', 'failures'))):
        with op.batch_alter_table(table, schema=None) as batch_op:
            for col in cols:
                batch_op.alter_column(col, server_default=None)


def downgrade() -> None:
    with op.batch_alter_table('data_request_file', schema=None) as batch_op:
        for col in ('failed_at', 'failures', 'error'):
            batch_op.drop_column(col)
    with op.batch_alter_table('data_request', schema=None) as batch_op:
        for col in ('progress_at', 'progress_files', 'stuck_count'):
            batch_op.drop_column(col)
