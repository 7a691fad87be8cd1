"""daemon leases record each daemon's last successful run (for /readyz and /metrics)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 21:35:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import dawms.catalog.models

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('daemon_lock') as batch:
        batch.add_column(sa.Column('last_success_at',
                                   dawms.catalog.models.UTCDateTime(timezone=True),
                                   nullable=True))
        batch.add_column(sa.Column('last_duration_s', sa.Double(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('daemon_lock') as batch:
        batch.drop_column('last_duration_s')
        batch.drop_column('last_success_at')
