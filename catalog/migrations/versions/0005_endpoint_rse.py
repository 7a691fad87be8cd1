"""storage endpoints name their Rucio RSE

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 17:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # existing endpoints get '' (their own name is their RSE); the model has no server default
    with op.batch_alter_table('storage_endpoint', schema=None) as batch_op:
        batch_op.add_column(sa.Column('rse', sa.String(length=128), nullable=False,
                                      server_default=''))
    with op.batch_alter_table('storage_endpoint', schema=None) as batch_op:
        batch_op.alter_column('rse', server_default=None)


def downgrade() -> None:
    with op.batch_alter_table('storage_endpoint', schema=None) as batch_op:
        batch_op.drop_column('rse')
