"""Refiner: turn registered tasks into jobs (JEDI's TaskRefiner + JobGenerator split).

Resolves each input dataset through the DDM, splits the files by the task's rule
and creates the jobs in ``defined``; the task becomes ``defined``. A task whose
inputs cannot be resolved becomes ``broken`` with the reason, and loses nothing.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from sqlalchemy import select

from dawms.catalog.db import Database
from dawms.catalog.models import File, Task
from dawms.catalog.states import Entity, TaskState
from dawms.catalog.transition import transition, transition_many
from dawms.ddm_bridge.abc import DDM, DDMError, Ran

from .generate import Piece, create_jobs
from .split import split_files

log = logging.getLogger(__name__)
ACTOR = "scheduler:refiner"


def run_once(db: Database, ddm: DDM, now: datetime | None = None, *, limit: int = 20) -> Ran:
    """Refine up to ``limit`` registered tasks; returns how many jobs were created,
    full when it took ``limit`` tasks (each leaves ``registered``: defined or broken)."""
    now = now or datetime.now(UTC)
    with db.session() as s:
        ids = list(s.scalars(select(Task.id).where(Task.state == TaskState.REGISTERED)
                             .order_by(Task.priority.desc(), Task.id).limit(limit)))
    created = 0
    for task_id in ids:
        try:
            created += _refine(db, ddm, task_id, now)
        except Exception as exc:  # one bad task must not stop the others: it is broken
            log.exception("task %s cannot be refined", task_id)
            reason = f"cannot be split into jobs: {type(exc).__name__}: {exc}"[:2000]
            with db.session() as s:
                transition_many(s, Entity.TASK, [task_id], TaskState.BROKEN,
                                expected=TaskState.REGISTERED, actor=ACTOR, reason=reason,
                                values={"error": reason}, now=now)
    return Ran(created, full=len(ids) == limit)


def _refine(db: Database, ddm: DDM, task_id: int, now: datetime) -> int:
    """Split one task into jobs (or break it, with the reason); returns jobs created."""
    with db.session() as s:
        task = s.get(Task, task_id)
        if task is None or task.state != TaskState.REGISTERED:
            return 0
        try:
            files: list[tuple[File, str]] = []
            for did in task.input_datasets:
                files += [(f, did) for f in ddm.list_files(s, did)]
        except (DDMError, ValueError) as exc:
            transition(s, Entity.TASK, task.id, TaskState.BROKEN,
                       expected=TaskState.REGISTERED, actor=ACTOR, reason=str(exc),
                       values={"error": str(exc)}, now=now)
            return 0
        if not files:
            reason = "the input datasets hold no files"
            transition(s, Entity.TASK, task.id, TaskState.BROKEN,
                       expected=TaskState.REGISTERED, actor=ACTOR, reason=reason,
                       values={"error": reason}, now=now)
            return 0
        chunks = split_files([_Sized(f, did) for f, did in files], task.split)
        pieces = [Piece(i + 1, 1, [(c.file, c.did) for c in chunk])
                  for i, chunk in enumerate(chunks)]
        created = len(create_jobs(s, task, pieces, now=now, actor=ACTOR,
                                  reason=f"split by {task.split}"))
        transition(s, Entity.TASK, task.id, TaskState.DEFINED,
                   expected=TaskState.REGISTERED, actor=ACTOR,
                   reason=f"{len(chunks)} jobs from {len(files)} files", now=now)
    return created


class _Sized:
    __slots__ = ("file", "did", "size")

    def __init__(self, f: File, did: str) -> None:
        self.file, self.did, self.size = f, did, f.size
