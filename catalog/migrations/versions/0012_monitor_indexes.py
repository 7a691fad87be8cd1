"""monitor indexes: keyset pages of jobs per task, queue and state, and the time windows

The monitor pages jobs newest first within a task, a queue or a state
(``WHERE task_id = ? AND id < ? ORDER BY id DESC``), and counts the jobs that
ended or beat in the last hours (dashboard, sites) and a site's jobs by the time
they ended (statistics).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01 21:30:00
"""

from __future__ import annotations

from alembic import op

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None

INDEXES = {
    "ix_job_task_id": ["task_id", "id"],
    "ix_job_queue_id": ["queue_id", "id"],
    "ix_job_state_id": ["state", "id"],
    "ix_job_ended_at": ["ended_at"],
    "ix_job_queue_ended": ["queue_id", "ended_at"],  # a site's statistics
    "ix_job_heartbeat_at": ["heartbeat_at"],
}


def upgrade() -> None:
    with op.batch_alter_table('job', schema=None) as batch_op:
        for name, columns in INDEXES.items():
            batch_op.create_index(name, columns, unique=False)


def downgrade() -> None:
    with op.batch_alter_table('job', schema=None) as batch_op:
        for name in INDEXES:
            batch_op.drop_index(name)
