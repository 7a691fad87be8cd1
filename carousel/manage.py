"""What users and operators do with staging requests: list with progress, cancel,
change priority (``dawms staging list|cancel|priority``, ``/api/v1/staging/...``).

Cancelling withdraws the request's open DDM requests, cancels its files that
have not arrived and the request itself; the carousel then closes the jobs that
needed those files and releases what was staged. A request that has ended
cannot be cancelled or reprioritized; each id gets its own answer.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, aliased

from dawms.catalog.models import DataRequest, StagingFile, StagingRequest, StorageEndpoint, Task
from dawms.catalog.states import (
    STAGING_OPEN,
    Entity,
    RequestState,
    StagingFileState,
    StagingState,
)
from dawms.catalog.transition import transition_many

MAX_IDS = 10000
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def list_requests(session: Session, *, task_id: int | None = None, state: str | None = None,
                  limit: int = 100) -> list[dict[str, Any]]:
    """Staging requests, newest first, with progress (files and bytes staged, lost)."""
    if state is not None and state not in {s.value for s in StagingState}:
        raise ValueError(f"state must be one of {[s.value for s in StagingState]}")
    src, dst = aliased(StorageEndpoint), aliased(StorageEndpoint)
    q = (select(StagingRequest, Task.name, src.name, dst.name)
         .join(Task, Task.id == StagingRequest.task_id)
         .join(src, src.id == StagingRequest.source_id)
         .join(dst, dst.id == StagingRequest.destination_id)
         .order_by(StagingRequest.id.desc()).limit(limit))
    if task_id is not None:
        q = q.where(StagingRequest.task_id == task_id)
    if state is not None:
        q = q.where(StagingRequest.state == state)
    rows = session.execute(q).all()
    staging = dict(session.execute(
        select(StagingFile.request_id, func.count())
        .where(StagingFile.request_id.in_([r[0].id for r in rows]),
               StagingFile.state == StagingFileState.STAGING)
        .group_by(StagingFile.request_id)).all())
    out = []
    for req, task_name, source, dest in rows:
        out.append({
            "id": req.id, "task_id": req.task_id, "task": task_name, "dataset": req.dataset,
            "source": source, "destination": dest, "state": req.state, "share": req.share,
            "priority": req.priority, "files_total": req.files_total,
            "files_staged": req.files_staged, "files_staging": staging.get(req.id, 0),
            "files_lost": req.files_lost, "bytes_total": req.bytes_total,
            "bytes_staged": req.bytes_staged,
            "progress": round(req.files_staged / req.files_total, 4) if req.files_total else 1.0,
            "pinned_until": req.pinned_until.isoformat() if req.pinned_until else None,
            "released": req.released_at is not None, "error": req.error,
            "created_at": req.created_at.isoformat()})
    return out


def _check_ids(ids: list[int]) -> list[int]:
    ids = list(dict.fromkeys(ids))
    if not ids or len(ids) > MAX_IDS:
        raise ValueError(f"give from 1 to {MAX_IDS} request ids")
    return ids


def cancel_requests(session: Session, request_ids: list[int], *, actor: str,
                    reason: str = "", now: datetime | None = None) -> dict[int, str]:
    """Cancel each open request; per id: cancelled | <its final state> | unknown."""
    now = now or datetime.now(UTC)
    ids = _check_ids(request_ids)
    states = dict(session.execute(select(StagingRequest.id, StagingRequest.state)
                                  .where(StagingRequest.id.in_(ids))).all())
    result = {i: states.get(i, "unknown") for i in ids}
    why = reason or "cancelled"
    for state in STAGING_OPEN:
        group = [i for i, st in states.items() if st == state]
        if not group:
            continue
        dr_ids = list(session.scalars(
            select(DataRequest.id).join(StagingFile, StagingFile.data_request_id == DataRequest.id)
            .where(StagingFile.request_id.in_(group),
                   DataRequest.state == RequestState.REQUESTED).distinct()))
        transition_many(session, Entity.REQUEST, dr_ids, RequestState.CANCELLED,
                        expected=RequestState.REQUESTED, actor=actor,
                        reason=f"staging cancelled: {why}", now=now)
        for fstate in (StagingFileState.QUEUED, StagingFileState.STAGING):
            fids = list(session.scalars(select(StagingFile.id).where(
                StagingFile.request_id.in_(group), StagingFile.state == fstate)))
            transition_many(session, Entity.STAGING_FILE, fids, StagingFileState.CANCELLED,
                            expected=fstate, actor=actor, reason=why, now=now)
        for rid in transition_many(session, Entity.STAGING, group, StagingState.CANCELLED,
                                   expected=state, actor=actor, reason=why, now=now,
                                   values={"error": why[:2000]}):
            result[rid] = StagingState.CANCELLED.value
    return result


def set_priority(session: Session, request_ids: list[int], priority: int) -> dict[int, str]:
    """Change the priority of open requests; per id: "<old> -> <new>" | <final state> |
    unknown."""
    ids = _check_ids(request_ids)
    if isinstance(priority, bool) or not isinstance(priority, int) \
            or not INT32_MIN <= priority <= INT32_MAX:
        raise ValueError(f"priority must be an integer from {INT32_MIN} to {INT32_MAX}")
    rows = dict(session.execute(select(StagingRequest.id, StagingRequest.state)
                                .where(StagingRequest.id.in_(ids))).all())
    old = dict(session.execute(select(StagingRequest.id, StagingRequest.priority)
                               .where(StagingRequest.id.in_(ids))).all())
    result = {i: rows.get(i, "unknown") for i in ids}
    open_ids = [i for i, st in rows.items() if st in STAGING_OPEN]
    if open_ids:
        changed = set(session.scalars(
            update(StagingRequest)
            .where(StagingRequest.id.in_(open_ids),
                   StagingRequest.state.in_([s.value for s in STAGING_OPEN]))
            .values(priority=priority).returning(StagingRequest.id)))
        for i in changed:
            result[i] = f"{old[i]} -> {priority}"
    return result
