"""Automatic rebrokerage: queued jobs stranded on a queue go back to the broker.

Two kinds are stranded (PanDA's rebrokerage of jobs stuck in ``activated``):
jobs ``assigned`` or ``activated`` at a queue an operator set ``offline`` or
``brokeroff`` (``dawms sites sync``), and jobs ``activated`` for longer than
``rebroker_after_s`` with no pilot taking them. Each moves exactly as a manual
``dawms job reassign`` does (``rebroker.reassign_jobs``): the row is closed by a
compare-and-set on its state, so a pilot that claims it in the same instant wins
and the move is skipped, and a successor row goes to the broker with the queue it
left excluded. Runs every scheduler interval (30 s), so a stranded job moves
within a minute.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import or_, select

from dawms.catalog.db import Database
from dawms.catalog.models import Job, Queue
from dawms.catalog.states import JobState, QueueStatus

from .config import SchedulerConfig
from .rebroker import reassign_jobs

ACTOR = "scheduler:rebroker"
UNBROKERED = (QueueStatus.OFFLINE, QueueStatus.BROKEROFF)
BUNCH = 2000


def run_once(db: Database, cfg: SchedulerConfig, now: datetime | None = None) -> int:
    """Rebroker the stranded jobs of one bunch; returns how many moved."""
    now = now or datetime.now(UTC)
    cutoff = now - timedelta(seconds=cfg.rebroker_after_s)
    with db.session() as s:
        ids = list(s.scalars(
            select(Job.id).join(Queue, Queue.id == Job.queue_id)
            .where(or_((Job.state.in_([JobState.ASSIGNED, JobState.ACTIVATED])
                        & Queue.status.in_(list(UNBROKERED))),
                       (Job.state == JobState.ACTIVATED) & (Job.state_changed_at < cutoff)))
            .order_by(Job.id).limit(BUNCH)))
        if not ids:
            return 0
        result = reassign_jobs(s, ids, actor=ACTOR, now=now)
        return sum(v.startswith("-> ") for v in result.values())
