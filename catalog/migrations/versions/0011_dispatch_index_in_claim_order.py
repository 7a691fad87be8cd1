"""the dispatch index in claim order (priority DESC, id)

The claim orders by ``priority DESC, id`` within one queue's activated jobs; an
index on ``(queue_id, state, priority)`` made PostgreSQL sort every activated job
of the top priority on each claim (an Incremental Sort: 28.7 ms at 20k jobs).
``(queue_id, state, priority DESC, id)`` hands rows out in claim order at any
depth (0.09 ms); ``priority ASC, id`` would not (a backward scan gives ``id DESC``).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01 21:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.drop_index('ix_job_dispatch')
        batch_op.create_index('ix_job_dispatch',
                              ['queue_id', 'state', sa.desc(sa.column('priority')), 'id'],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.drop_index('ix_job_dispatch')
        batch_op.create_index('ix_job_dispatch', ['queue_id', 'state', 'priority'],
                              unique=False)
