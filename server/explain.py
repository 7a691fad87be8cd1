"""Explain and predict over HTTP: why a job or task is not moving, when it will be done,
and what a submission would do (a dry run that writes nothing).

``GET /api/v1/job/{id}/explain``, ``GET /api/v1/task/{id}/explain`` (any caller may
read, as every listing) and ``POST /api/v1/task/dry_run`` (those who may submit; the
owner rule is a submission's). The answers are built by ``scheduler.explain``,
``scheduler.predict`` and ``scheduler.dryrun``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Body, Depends, Path, Request
from fastapi.exceptions import RequestValidationError

from dawms.scheduler.dryrun import dry_run
from dawms.scheduler.explain import explain_job, explain_task

from .auth import ANY, SUBMIT, owner_for_submit
from .envelope import NotFound, ok
from .schemas import Envelope
from .tokens import Principal
from .user import MAX_TRANSFORMATION

router = APIRouter(prefix="/api/v1", tags=["explain"])
MAX_ID = 2**31 - 1


@router.get("/job/{job_id}/explain", response_model=Envelope, dependencies=[Depends(ANY)])
def job_explain(request: Request, job_id: int = Path(ge=1, le=MAX_ID)) -> dict[str, Any]:
    """What holds the job now: layer, since when, why, and what would unblock it."""
    with request.app.state.db.session() as s:
        try:
            e = explain_job(s, job_id, datetime.now(UTC), request.app.state.cfg)
        except LookupError as exc:
            raise NotFound(str(exc)) from None
        return ok(e.to_dict(), e.reason)


@router.get("/task/{task_id}/explain", response_model=Envelope, dependencies=[Depends(ANY)])
def task_explain(request: Request, task_id: int = Path(ge=1, le=MAX_ID)) -> dict[str, Any]:
    """The task's open jobs grouped by what holds them, its staging, and its estimate."""
    with request.app.state.db.session() as s:
        try:
            out = explain_task(s, task_id, datetime.now(UTC), request.app.state.cfg)
        except LookupError as exc:
            raise NotFound(str(exc)) from None
        return ok(out, out["summary"])


@router.post("/task/dry_run", response_model=Envelope)
def task_dry_run(request: Request, spec: dict[str, Any] = Body(...),
                 who: Principal = Depends(SUBMIT)) -> dict[str, Any]:
    """How the task would split, where each job would go and why, what data would move
    and what would come from tape. Nothing is written; an invalid spec is a 400."""
    transformation = spec.get("transformation")
    if isinstance(transformation, str) and len(transformation) > MAX_TRANSFORMATION:
        raise RequestValidationError([{
            "loc": ("body", "transformation"), "type": "string_too_long", "input": None,
            "msg": f"is {len(transformation)} characters; at most {MAX_TRANSFORMATION}"}])
    owner = owner_for_submit(who, spec)
    plan = dry_run(request.app.state.db, request.app.state.ddm, spec, owner=owner,
                   cfg=request.app.state.cfg)
    return ok(plan, f"{plan['jobs_total']} jobs; nothing was written")
