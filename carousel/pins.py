"""Pins: staged copies live while a task needs them, and go when none does.

While a request is open its DDM requests are kept alive for ``pin_staging_s``
(PanDA: 15 d), once done for ``pin_done_s`` (30 d), renewed when half is left
(Rucio: the rules' lifetime; the local DDM keeps copies until released). When
its task has ended (or the request was cancelled) the copies it brought are
released through the DDM, except files an open job or another open staging
request still needs; the request is marked released once nothing of it is kept.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from dawms.catalog.models import DataRequest, Job, JobFile, StagingFile, StagingRequest, Task
from dawms.catalog.states import JOB_FINAL, STAGING_OPEN, TASK_FINAL, StagingState
from dawms.ddm_bridge.abc import DDM

from .config import CarouselConfig

OPEN = [s.value for s in STAGING_OPEN]


def _data_requests(session: Session, request_ids: list[int]) -> dict[int, list[DataRequest]]:
    out: dict[int, list[DataRequest]] = defaultdict(list)
    for rid, dr in session.execute(
            select(StagingFile.request_id, DataRequest)
            .join(DataRequest, DataRequest.id == StagingFile.data_request_id)
            .where(StagingFile.request_id.in_(request_ids)).distinct()):
        out[rid].append(dr)
    return out


def keep_alive(session: Session, ddm: DDM, now: datetime, cfg: CarouselConfig) -> int:
    """Renew the pins of requests whose tasks still run; returns how many were renewed."""
    renewed = 0
    for states, life in ((OPEN, cfg.pin_staging_s), ([StagingState.DONE], cfg.pin_done_s)):
        due = now + timedelta(seconds=life / 2)
        ids = list(session.scalars(
            select(StagingRequest.id).join(Task, Task.id == StagingRequest.task_id)
            .where(StagingRequest.state.in_(states), StagingRequest.released_at.is_(None),
                   Task.state.not_in(list(TASK_FINAL)),
                   StagingRequest.pinned_until.is_not(None),
                   StagingRequest.pinned_until < due)))
        if not ids:
            continue
        for drs in _data_requests(session, ids).values():
            ddm.extend_staging(session, drs, life)
        session.execute(update(StagingRequest).where(StagingRequest.id.in_(ids))
                        .values(pinned_until=now + timedelta(seconds=life)))
        renewed += len(ids)
    return renewed


def release_unneeded(session: Session, ddm: DDM, now: datetime) -> int:
    """Release what ended requests of ended tasks (or cancelled ones) staged."""
    ids = list(session.scalars(
        select(StagingRequest.id).join(Task, Task.id == StagingRequest.task_id)
        .where(StagingRequest.released_at.is_(None),
               StagingRequest.state.not_in(OPEN),
               or_(Task.state.in_(list(TASK_FINAL)),
                   StagingRequest.state == StagingState.CANCELLED))))
    if not ids:
        return 0
    released = 0
    drs = _data_requests(session, ids)
    for rid in ids:
        files = set(session.scalars(select(StagingFile.file_id)
                                    .where(StagingFile.request_id == rid)))
        needed = set(session.scalars(
            select(JobFile.file_id).join(Job, Job.id == JobFile.job_id)
            .where(JobFile.type == "in", JobFile.file_id.in_(files),
                   Job.state.not_in(list(JOB_FINAL)))))
        needed |= set(session.scalars(
            select(StagingFile.file_id)
            .join(StagingRequest, StagingRequest.id == StagingFile.request_id)
            .where(StagingFile.file_id.in_(files), StagingRequest.id != rid,
                   StagingRequest.state.in_(OPEN))))
        released += ddm.release_staging(session, drs.get(rid, []), needed)
        if not needed:
            session.execute(update(StagingRequest).where(StagingRequest.id == rid)
                            .values(released_at=now))
    return released
