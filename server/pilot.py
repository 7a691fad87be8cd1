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
from .metrics import DISPATCH_SECONDS, DISPATCHED, REPORT_SECONDS, REPORTS, timed
from .schemas import AcquireJobs, Envelope, JobUpdate, JobUpdates
from .tokens import Principal

router = APIRouter(prefix="/api/v1/pilot", tags=["pilot"])
_PILOT_SEEN_EVERY_S = 60  # how often a queue's last_pilot_at is refreshed
_QUEUE_TTL_S = 30.0
_FINAL_REPORTS = frozenset({JobState.FINISHED.value, JobState.FAILED.value})


def _queue_id(request: Request, name: str) -> int:
    """A queue's id (never changes: queues are set offline, never removed). Its status
    is not cached: it is read inside each claim's transaction, so an operator's
    ``dawms sites sync`` takes effect on every server process at once."""
    cache: dict[str, int] = request.app.state.queue_cache
    if name not in cache:
        with request.app.state.db.session() as s:
            queue_id = s.scalar(select(Queue.id).where(Queue.name == name))
        if queue_id is None:
            raise NotFound(f"no queue named {name!r}")
        cache[name] = queue_id
    return cache[name]


def _status_now(s: Any, queue_id: int, now: datetime) -> str:
    """The queue's status in this transaction; notes that a pilot asked (at most once a
    minute per queue: the broker's "pilots seen recently" filter reads it)."""
    status, seen = s.execute(select(Queue.status, Queue.last_pilot_at)
                             .where(Queue.id == queue_id)).one()
    if seen is None or (now - seen).total_seconds() > _PILOT_SEEN_EVERY_S:
        s.execute(Queue.__table__.update().where(Queue.id == queue_id).values(last_pilot_at=now))
    return status


@router.post("/acquire_jobs", response_model=Envelope)
def acquire_jobs(body: AcquireJobs, request: Request,
                 who: Principal = Depends(PILOT)) -> dict[str, Any]:
    """Claim up to ``n_jobs`` activated jobs of the queue for this pilot."""
    check_queue(who, body.queue)
    with timed(DISPATCH_SECONDS.labels(body.queue[:128])):
        return _acquire(body, request)


def _acquire(body: AcquireJobs, request: Request) -> dict[str, Any]:
    queue_id = _queue_id(request, body.queue)
    with request.app.state.db.session() as s:
        status = _status_now(s, queue_id, datetime.now(UTC))
        if status not in QUEUE_SERVED:
            return ok({"jobs": [], "pending": 0,
                       "command_poll_s": request.app.state.cfg.command_poll_s},
                      f"queue {body.queue} is {status}")
        rows = claim_jobs(s, queue_id, body.n_jobs, body.pilot_id,
                          max_walltime_s=body.max_walltime_s)
        pending = 0
        if not rows:
            pending = s.scalar(select(func.count()).select_from(Job).where(
                Job.queue_id == queue_id, Job.state.in_(list(JOB_QUEUED)))) or 0
    # the stored JobSpec.to_dict() with the claim's fence (JobSpec.claimed, without
    # parsing the stored spec again on the hot path)
    jobs = [{**spec, "job_id": job_id, "attempt": attempt, "lease_token": token}
            for job_id, attempt, token, spec in rows]
    if jobs:
        DISPATCHED.labels(body.queue).inc(len(jobs))
    return ok({"jobs": jobs, "pending": pending,
               "command_poll_s": request.app.state.cfg.command_poll_s})


def _apply(request: Request, update: JobUpdate) -> dict[str, Any]:
    result = "refused"
    try:
        with timed(REPORT_SECONDS.labels(update.state)):
            reply = _apply_report(request, update)
        result = "ok"
        return reply
    except StaleReport:
        result = "stale"
        raise
    finally:
        REPORTS.labels(update.state, result).inc()


def _apply_report(request: Request, update: JobUpdate) -> dict[str, Any]:
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
