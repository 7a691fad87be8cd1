"""Creating job rows (first attempts from the splitter, new attempts from retries).

Output and log file names are made here from the task's dataset names; each is
checked against the catalog's name grammar before a row is written, so a name
that could not be a safe path never reaches a pilot.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import insert
from sqlalchemy.orm import Session

from dawms.catalog.models import File, Job, JobFile, Task
from dawms.catalog.names import check_name, split_did
from dawms.catalog.states import Entity, JobState
from dawms.catalog.transition import record_created

from .naming import log_lfn, output_lfn


class Piece(NamedTuple):
    """One job to create: which piece of the task, which attempt, its inputs."""

    index: int
    attempt: int
    inputs: Sequence[tuple[File, str]]  # (file, dataset)
    retry_of: int | None = None
    broker_hint: dict[str, Any] | None = None
    resources: dict[str, int] | None = None  # over the task's (a retry with more memory)


def create_jobs(session: Session, task: Task, pieces: Sequence[Piece], *, now: datetime,
                actor: str, reason: str) -> list[int]:
    """Insert one defined job per piece, with its input, output and log files."""
    res = task.resources
    jobs = [Job(task_id=task.id, job_index=p.index, attempt=p.attempt, retry_of=p.retry_of,
                broker_hint=p.broker_hint, state=JobState.DEFINED, priority=task.priority,
                cores=r["cores"], memory_mb=r["memory_mb"], walltime_s=r["walltime_s"],
                disk_mb=r["disk_mb"], state_changed_at=now, created_at=now)
            for p in pieces for r in [{**res, **(p.resources or {})}]]
    session.add_all(jobs)
    session.flush()
    out_scope, _ = split_did(task.output_dataset)
    log_scope, _ = split_did(task.log_dataset)
    rows = []
    for job, (index, attempt, inputs, *_) in zip(jobs, pieces, strict=True):
        for f, did in inputs:
            rows.append({"job_id": job.id, "type": "in", "scope": f.scope, "lfn": f.name,
                         "dataset": did, "file_id": f.id, "size": f.size,
                         "adler32": f.adler32})
        rows.append({"job_id": job.id, "type": "out", "scope": out_scope,
                     "lfn": check_name(output_lfn(task.output_dataset, index, attempt),
                                       "output file name"),
                     "dataset": task.output_dataset, "file_id": None, "size": None,
                     "adler32": None})
        rows.append({"job_id": job.id, "type": "log", "scope": log_scope,
                     "lfn": check_name(log_lfn(task.log_dataset, index, attempt),
                                       "log file name"),
                     "dataset": task.log_dataset, "file_id": None, "size": None,
                     "adler32": None})
    session.execute(insert(JobFile), rows)
    record_created(session, Entity.JOB, [(j.id, j.attempt) for j in jobs], JobState.DEFINED,
                   actor=actor, reason=reason, now=now)
    return [j.id for j in jobs]
