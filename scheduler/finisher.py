"""Finisher: a task's state follows its jobs.

``ready -> running`` once a job of it reached a pilot; when every piece of the
task (``job_index``) has ended for good: ``done`` if every piece finished,
``finished`` if some did (partial, JEDI's word), ``failed`` if none did.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime

from sqlalchemy import select

from dawms.catalog.db import Database
from dawms.catalog.models import Job, Task
from dawms.catalog.states import JOB_FINAL, JOB_WITH_PILOT, Entity, JobState, TaskState
from dawms.catalog.transition import transition_many

ACTOR = "scheduler:finisher"
ACTIVE = [TaskState.DEFINED, TaskState.READY, TaskState.RUNNING]


def task_outcome(states_by_piece: dict[int, list[str]]) -> TaskState | None:
    """The final state a task's pieces imply, or None while any piece is open."""
    finished = 0
    for states in states_by_piece.values():
        if any(s not in JOB_FINAL for s in states):
            return None
        finished += JobState.FINISHED in states
    if finished == len(states_by_piece):
        return TaskState.DONE
    return TaskState.FINISHED if finished else TaskState.FAILED


def run_once(db: Database, now: datetime | None = None) -> int:
    """Move tasks along; returns how many changed state."""
    now = now or datetime.now(UTC)
    changed = 0
    with db.session() as s:
        tasks = dict(s.execute(select(Task.id, Task.state).where(Task.state.in_(ACTIVE))).all())
        if not tasks:
            return 0
        pieces: dict[int, dict[int, list[str]]] = defaultdict(lambda: defaultdict(list))
        for task_id, index, state in s.execute(select(Job.task_id, Job.job_index, Job.state)
                                               .where(Job.task_id.in_(list(tasks)))):
            pieces[task_id][index].append(state)
        for task_id, state in tasks.items():
            if task_id not in pieces:
                continue
            outcome = task_outcome(pieces[task_id])
            states = {st for sts in pieces[task_id].values() for st in sts}
            if outcome is not None:
                changed += len(transition_many(s, Entity.TASK, [task_id], outcome,
                                               expected=state, actor=ACTOR,
                                               reason="all jobs ended", now=now))
            elif state == TaskState.READY and states & (JOB_WITH_PILOT | {JobState.FINISHED}):
                changed += len(transition_many(s, Entity.TASK, [task_id], TaskState.RUNNING,
                                               expected=state, actor=ACTOR,
                                               reason="a job reached a pilot", now=now))
    return changed
