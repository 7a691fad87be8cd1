"""The cheap command poll: ``get_command`` tells a pilot whether its job is to die.

A kill used to travel only with the full heartbeat (PanDA's 30 minutes), so a
killed job could run on and register its outputs long after ``dawms job kill``.
A running pilot now also asks this endpoint every ``command_poll_s`` (the server
sets the interval in the ``acquire_jobs`` reply): one indexed read of the job
row, no write, no lock, no metrics. It is fenced like every pilot call: an
attempt or lease that is not current, or a job already ended, gets 409 so the
pilot stops at once.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from dawms.catalog.models import Job
from dawms.catalog.states import JOB_FINAL
from dawms.scheduler.report import StaleReport
from dawms.wire import reports as wire_reports

from .auth import PILOT, Forbidden, foreign_jobs
from .envelope import ok
from .schemas import Envelope, Id
from .tokens import Principal

router = APIRouter(prefix="/api/v1/pilot", tags=["pilot"])


class CommandQuery(BaseModel):
    """``wire.CommandQuery``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    job_id: Id
    attempt: int = Field(ge=1, le=2**31 - 1)
    lease_token: str = Field(min_length=1, max_length=wire_reports.LEASE_MAX)


@router.post("/get_command", response_model=Envelope)
def get_command(body: CommandQuery, request: Request,
                who: Principal = Depends(PILOT)) -> dict[str, Any]:
    """The pending command of a running attempt (``tobekilled``) or none."""
    if foreign_jobs(request, who, [body.job_id]):
        raise Forbidden(f"job {body.job_id} is not of a queue this token is bound to")
    with request.app.state.db.session() as s:
        row = s.execute(select(Job.attempt, Job.lease_token, Job.state, Job.command)
                        .where(Job.id == body.job_id)).first()
    if row is None:
        raise StaleReport(f"job {body.job_id} does not exist")
    attempt, token, state, command = row
    if attempt != body.attempt or token != body.lease_token:
        raise StaleReport(f"job {body.job_id} attempt {body.attempt} with this lease is not "
                          f"current (current attempt {attempt}, state {state})")
    if state in JOB_FINAL:
        raise StaleReport(f"job {body.job_id} attempt {body.attempt} is already {state}")
    return ok({"command": command})
