"""When will it be done? Estimates with a range, from what was measured so far.

PanDA users wrote their own tools to get a task's percent done; dawms says it,
with an estimated completion time. A task's estimate comes from the throughput
its pieces have had (pieces finished over the time since the first one started:
that folds in the queues' slots, the waiting and the run times as they really
were), applied to the pieces left; its range is the rate's counting error
(±1/√n after n finished pieces). Pieces still waiting for data cannot end before
their data request or staging request does plus a median run time, so the
estimate is never earlier than that. Before any piece has finished (scouts
first) there is no estimate, and the answer says so rather than guessing.
A data or staging request's estimate is its byte rate since it was made.
"""

from __future__ import annotations

import math
import statistics
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dawms.catalog.models import DataRequest, DataRequestFile, File, Job, JobFile, StagingRequest
from dawms.catalog.states import STAGING_OPEN, JobState, RequestState


def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t else None


def request_eta(s: Session, req: DataRequest, now: datetime) -> dict[str, Any]:
    """A data request's bytes done, total and estimated end (None until bytes move)."""
    total = s.scalar(select(func.coalesce(func.sum(File.size), 0))
                     .join(DataRequestFile, DataRequestFile.file_id == File.id)
                     .where(DataRequestFile.request_id == req.id)) or 0
    eta = None
    elapsed = (now - req.created_at).total_seconds()
    if req.state != RequestState.REQUESTED:
        eta = req.updated_at
    elif req.bytes_done > 0 and elapsed > 0:
        eta = now + timedelta(seconds=(total - req.bytes_done) / (req.bytes_done / elapsed))
    return {"request_id": req.id, "bytes_done": req.bytes_done, "bytes_total": int(total),
            "eta": _iso(eta)}


def staging_eta(req: StagingRequest, now: datetime) -> dict[str, Any]:
    elapsed = (now - req.created_at).total_seconds()
    eta = None
    if req.state not in STAGING_OPEN:
        eta = req.updated_at
    elif req.bytes_staged > 0 and elapsed > 0:
        left = req.bytes_total - req.bytes_staged
        eta = now + timedelta(seconds=left / (req.bytes_staged / elapsed))
    return {"staging_request_id": req.id, "bytes_done": req.bytes_staged,
            "bytes_total": req.bytes_total, "eta": _iso(eta)}


def task_prediction(s: Session, task_id: int, now: datetime) -> dict[str, Any]:
    """Progress (pieces and input files done / total) and the estimated completion."""
    rows = s.execute(select(Job.id, Job.job_index, Job.state, Job.started_at, Job.ended_at)
                     .where(Job.task_id == task_id).order_by(Job.job_index, Job.id)).all()
    latest: dict[int, Any] = {}
    for r in rows:
        latest[r.job_index] = r  # the last attempt (or move) of each piece
    files = dict(s.execute(select(JobFile.job_id, func.count()).where(
        JobFile.job_id.in_([r.id for r in latest.values()]), JobFile.type == "in")
        .group_by(JobFile.job_id)).all()) if latest else {}
    done = [r for r in latest.values() if r.state == JobState.FINISHED]
    ended = [r for r in latest.values()
             if r.state in (JobState.FAILED, JobState.CANCELLED, JobState.CLOSED)]
    left = len(latest) - len(done) - len(ended)
    out: dict[str, Any] = {
        "jobs_total": len(latest), "jobs_done": len(done), "jobs_failed": len(ended),
        "files_total": sum(files.values()),
        "files_done": sum(files.get(r.id, 0) for r in done),
        "fraction_done": round(len(done) / len(latest), 4) if latest else 0.0,
        "eta": None, "eta_low": None, "eta_high": None, "basis": ""}
    if not latest:
        out["basis"] = "the task has no jobs yet"
        return out
    if left == 0:
        last = max((r.ended_at for r in latest.values() if r.ended_at), default=now)
        out.update(eta=_iso(last), eta_low=_iso(last), eta_high=_iso(last),
                   basis="every piece has ended")
        return out
    timed = [r for r in done if r.started_at and r.ended_at]
    if not timed:
        out["basis"] = "no job has finished yet: the first (scout) jobs give the estimate"
        return out
    first = min(r.started_at for r in timed)
    span = max((now - first).total_seconds(), 1.0)
    rate = len(done) / span  # pieces per second, as the task has really gone
    err = 1 / math.sqrt(len(done))
    runtime = statistics.median((r.ended_at - r.started_at).total_seconds() for r in timed)
    floor = _data_floor(s, task_id, now, runtime)
    eta = now + timedelta(seconds=left / rate)
    low = now + timedelta(seconds=left / (rate * (1 + err)))
    high = now + timedelta(seconds=left / (rate * (1 - err))) if err < 1 else None
    if floor:
        eta, low = max(eta, floor), max(low, floor)
        high = max(high, floor) if high else None
    out.update(eta=_iso(eta), eta_low=_iso(low), eta_high=_iso(high),
               basis=f"{len(done)} pieces finished at {rate * 3600:.3g}/h, median run "
                     f"{runtime:.0f} s" + ("; data still arriving" if floor else ""))
    return out


def _data_floor(s: Session, task_id: int, now: datetime, runtime: float) -> datetime | None:
    """The earliest the last data-bound piece can end: its data's estimate + a run."""
    etas: list[datetime] = []
    reqs = s.scalars(select(DataRequest).where(
        DataRequest.state == RequestState.REQUESTED,
        DataRequest.id.in_(select(JobFile.request_id).join(Job, Job.id == JobFile.job_id)
                           .where(Job.task_id == task_id, Job.state == JobState.ASSIGNED))))
    for req in reqs:
        if (eta := request_eta(s, req, now)["eta"]) is not None:
            etas.append(datetime.fromisoformat(eta))
    for sreq in s.scalars(select(StagingRequest).where(
            StagingRequest.task_id == task_id, StagingRequest.state.in_(list(STAGING_OPEN)))):
        if (eta := staging_eta(sreq, now)["eta"]) is not None:
            etas.append(datetime.fromisoformat(eta))
    return max(etas) + timedelta(seconds=runtime) if etas else None
