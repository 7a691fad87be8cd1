"""Staging endpoints: the carousel's requests with their progress, cancel, priority.

``GET /api/v1/staging/list`` (``task_id``, ``state``, ``limit``), ``POST
/api/v1/staging/cancel`` and ``POST /api/v1/staging/priority`` with a list of
request ids; each id gets its own answer in ``data``. Bad input is a 4xx in the
envelope and changes nothing.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from dawms.carousel.manage import MAX_IDS, cancel_requests, list_requests, set_priority
from dawms.catalog.states import StagingState

from .auth import ANY, STAGING, Principal
from .envelope import ok
from .schemas import Envelope, Id

router = APIRouter(prefix="/api/v1/staging", tags=["staging"])
STATES = "|".join(s.value for s in StagingState)


class CancelStaging(BaseModel):
    request_ids: list[Id] = Field(min_length=1, max_length=MAX_IDS)
    reason: str = Field("", max_length=2000)


class StagingPriority(BaseModel):
    request_ids: list[Id] = Field(min_length=1, max_length=MAX_IDS)
    priority: int = Field(ge=-(2**31), le=2**31 - 1)


@router.get("/list", response_model=Envelope, dependencies=[Depends(ANY)])
def staging_list(request: Request, task_id: int | None = Query(None, ge=1),
                 state: str | None = Query(None, pattern=f"^({STATES})$"),
                 limit: int = Query(100, ge=1, le=10000)) -> dict[str, Any]:
    """Staging requests, newest first, with files and bytes staged, staging, lost."""
    with request.app.state.db.session() as s:
        return ok(list_requests(s, task_id=task_id, state=state, limit=limit))


@router.post("/cancel", response_model=Envelope)
def staging_cancel(body: CancelStaging, request: Request,
                   who: Principal = Depends(STAGING)) -> dict[str, Any]:
    """Cancel requests: per id "cancelled", its final state, or "unknown"."""
    with request.app.state.db.session() as s:
        return ok(cancel_requests(s, body.request_ids, actor=f"user:{who.subject}"[:128],
                                  reason=body.reason))


@router.post("/priority", response_model=Envelope, dependencies=[Depends(STAGING)])
def staging_priority(body: StagingPriority, request: Request) -> dict[str, Any]:
    """Change the priority of open requests: per id "<old> -> <new>", its final state, or
    "unknown"."""
    with request.app.state.db.session() as s:
        return ok(set_priority(s, body.request_ids, body.priority))
