"""The pilot factory's endpoints: how many pilots its queues need, and tokens for them.

``demand`` gives, per queue, the jobs waiting for a pilot and the queue's pilot
settings from the site file (``pilot_backend``, ``backend_settings``, its status
and limits), so ``dawms-factory`` needs nothing but HTTP: no catalog, no site file.
A factory token names its queues; it reads the demand of those queues only and
obtains short-lived pilot tokens bound to a subset of them (at most
``DAWMS_PILOT_TOKEN_MAX_S``), one per batch of pilots it submits, so a pilot
carries no credential beyond the queues it serves and the hours it runs.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy import func, select

from dawms.catalog.models import Job, Queue
from dawms.catalog.states import JOB_QUEUED, JOB_WITH_PILOT, JobState

from . import tokens
from .auth import FACTORY, check_queue
from .envelope import ok
from .schemas import Envelope

router = APIRouter(prefix="/api/v1/factory", tags=["factory"])
QueueName = Annotated[str, Field(min_length=1, max_length=128)]


class PilotTokenIn(BaseModel):
    queues: list[QueueName] = Field(min_length=1, max_length=100)
    lifetime_s: int = Field(6 * 3600, ge=60, le=tokens.MAX_LIFETIME_S,
                            description="capped by DAWMS_PILOT_TOKEN_MAX_S")


@router.get("/demand", response_model=Envelope)
def demand(request: Request, queue: Annotated[list[QueueName], Query(max_length=100)],
           who: tokens.Principal = Depends(FACTORY)) -> dict[str, Any]:
    """Per queue: jobs ready for a pilot (activated), queued in total, held by pilots,
    and the queue's pilot settings (``known`` false: no such queue in the catalog)."""
    for q in queue:
        check_queue(who, q)
    out: dict[str, dict[str, Any]] = {
        q: {"activated": 0, "queued": 0, "with_pilot": 0, "known": False, "status": None,
            "pilot_backend": None, "backend_settings": {}, "max_running": 0, "max_queued": 0}
        for q in queue}
    with request.app.state.db.session() as s:
        rows = s.execute(select(Queue.name, Job.state, func.count())
                         .join(Job, Job.queue_id == Queue.id)
                         .where(Queue.name.in_(queue)).group_by(Queue.name, Job.state)).all()
        for q_row in s.scalars(select(Queue).where(Queue.name.in_(queue))):
            out[q_row.name].update(
                known=True, status=str(q_row.status), pilot_backend=q_row.pilot_backend,
                backend_settings=dict(q_row.backend_settings or {}),
                max_running=q_row.max_running, max_queued=q_row.max_queued)
    for name, state, n in rows:
        counts = out[name]
        if state == JobState.ACTIVATED:
            counts["activated"] += n
        if state in JOB_QUEUED:
            counts["queued"] += n
        elif state in JOB_WITH_PILOT:
            counts["with_pilot"] += n
    return ok(out)


@router.post("/pilot_token", response_model=Envelope)
def pilot_token(body: PilotTokenIn, request: Request,
                who: tokens.Principal = Depends(FACTORY)) -> dict[str, Any]:
    """A pilot token bound to ``queues`` (all of them the factory's own)."""
    for q in body.queues:
        check_queue(who, q)
    settings = request.app.state.settings
    lifetime = min(body.lifetime_s, settings.pilot_token_max_s)
    token, claims = tokens.issue(request.app.state.db, role="pilot",
                                 subject=f"{who.subject[:100]}/pilot", queues=body.queues,
                                 lifetime_s=lifetime, settings=settings)
    return ok({"token": token, "jti": claims["jti"], "queues": claims["queues"],
               "expires_at": datetime.fromtimestamp(claims["exp"], UTC).isoformat()})
