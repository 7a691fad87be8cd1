"""The pilot endpoints: acquire jobs, update a job, update jobs in bulk.

``acquire_jobs`` is the hot path: one claim statement returning the dispatch
data prepared at activation (a stored ``dawms.wire.JobSpec``, completed with
the claim's attempt and lease), no ORM object graph. Reports are checked
against the wire records (``dawms.wire.JobReport``) the pilot builds; the
pydantic models of ``schemas.py`` agree with them and make the OpenAPI
document. Updates are fenced by
``(job_id, attempt, lease_token)``: a stale one gets 409 and changes nothing.
In a bulk update each report stands alone: one that is stale, malformed, refused
by the DDM or by the database is answered for itself and rolled back alone.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from sqlalchemy import func, select

from dawms.catalog.models import Job, Queue
from dawms.catalog.states import JOB_QUEUED, QUEUE_SERVED, JobState
from dawms.catalog.transition import claim_jobs
from dawms.ddm_bridge.abc import DDMError
from dawms.scheduler.report import StaleReport, pilot_update, stored_outputs
from dawms.wire import BulkResult, JobReport

from .auth import PILOT, Forbidden, check_queue, foreign_jobs
from .envelope import DB_ERRORS, NotFound, db_error, ok
from .limits import body_limit
from .schemas import AcquireJobs, Envelope, JobUpdate, JobUpdates
from .tokens import Principal

router = APIRouter(prefix="/api/v1/pilot", tags=["pilot"])
_QUEUE_TTL_S = 30.0
_FINAL_REPORTS = frozenset({JobState.FINISHED.value, JobState.FAILED.value})


def _queue(request: Request, name: str) -> tuple[int, str]:
    cache: dict[str, tuple[float, int, str]] = request.app.state.queue_cache
    hit = cache.get(name)
    if hit and hit[0] > time.monotonic():
        return hit[1], hit[2]
    with request.app.state.db.session() as s:
        row = s.execute(select(Queue.id, Queue.status).where(Queue.name == name)).first()
    if row is None:
        raise NotFound(f"no queue named {name!r}")
    cache[name] = (time.monotonic() + _QUEUE_TTL_S, row[0], row[1])
    return row[0], row[1]


@router.post("/acquire_jobs", response_model=Envelope)
def acquire_jobs(body: AcquireJobs, request: Request,
                 who: Principal = Depends(PILOT)) -> dict[str, Any]:
    """Claim up to ``n_jobs`` activated jobs of the queue for this pilot."""
    check_queue(who, body.queue)
    queue_id, status = _queue(request, body.queue)
    if status not in QUEUE_SERVED:
        return ok({"jobs": [], "pending": 0}, f"queue {body.queue} is {status}")
    with request.app.state.db.session() as s:
        rows = claim_jobs(s, queue_id, body.n_jobs, body.pilot_id)
        pending = 0
        if not rows:
            pending = s.scalar(select(func.count()).select_from(Job).where(
                Job.queue_id == queue_id, Job.state.in_(list(JOB_QUEUED)))) or 0
    # the stored JobSpec.to_dict() with the claim's fence (JobSpec.claimed, without
    # parsing the stored spec again on the hot path)
    jobs = [{**spec, "job_id": job_id, "attempt": attempt, "lease_token": token}
            for job_id, attempt, token, spec in rows]
    return ok({"jobs": jobs, "pending": pending})


def _apply(request: Request, update: JobUpdate) -> dict[str, Any]:
    db, ddm = request.app.state.db, request.app.state.ddm
    report = JobReport.from_dict(update.model_dump())
    stored = stored_outputs(db, ddm, report)  # outputs' bytes read before any row lock
    with db.session() as s:
        return pilot_update(s, ddm, report, datetime.now(UTC), stored=stored)


@router.post("/update_job", response_model=Envelope)
def update_job(body: JobUpdate, request: Request,
               who: Principal = Depends(PILOT)) -> dict[str, Any]:
    """A heartbeat or a state report; the final one carries the outputs."""
    if body.state in _FINAL_REPORTS:  # checked before its outputs' bytes are read
        if foreign_jobs(request, who, [body.job_id]):
            raise Forbidden(f"job {body.job_id} is not of a queue this token is bound to")
        return ok(_apply(request, body))
    # a heartbeat: the queue check and the report in one transaction
    report = JobReport.from_dict(body.model_dump())
    with request.app.state.db.session() as s:
        if foreign_jobs(request, who, [body.job_id], session=s):
            raise Forbidden(f"job {body.job_id} is not of a queue this token is bound to")
        return ok(pilot_update(s, request.app.state.ddm, report, datetime.now(UTC)))


@router.post("/update_jobs_bulk", response_model=Envelope, openapi_extra=body_limit("bulk"))
def update_jobs_bulk(body: JobUpdates, request: Request,
                     who: Principal = Depends(PILOT)) -> dict[str, Any]:
    """Many updates at once; each is applied (or refused) on its own."""
    results: list[dict[str, Any]] = []
    foreign = foreign_jobs(request, who, [u.job_id for u in body.updates])
    for update in body.updates:
        if update.job_id in foreign:
            results.append({"job_id": update.job_id, "success": False, "stale": False,
                            "message": "not of a queue this token is bound to"})
            continue
        try:
            result = BulkResult(job_id=update.job_id, success=True,
                                **_apply(request, update))
        except (StaleReport, ValueError, DDMError) as exc:  # WireError is a ValueError
            result = BulkResult(job_id=update.job_id, success=False, message=str(exc)[:4000],
                                stale=isinstance(exc, StaleReport))
        except DB_ERRORS as exc:
            result = BulkResult(job_id=update.job_id, success=False,
                                message=db_error(exc)[:4000])
        results.append(result.to_dict())
    return ok(results)
