"""DDM callbacks over HTTP: a data request ended. Kept once per dedup key."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request

from dawms.ddm_bridge.events import apply_request_outcome

from .envelope import ok
from .schemas import DDMEventIn, Envelope

router = APIRouter(prefix="/api/v1/ddm", tags=["ddm"])


@router.post("/event", response_model=Envelope)
def ddm_event(body: DDMEventIn, request: Request) -> dict[str, Any]:
    """Apply "request ended"; duplicates and late events are acknowledged, not applied."""
    with request.app.state.db.session() as s:
        result = apply_request_outcome(s, source=body.source, dedup_key=body.dedup_key,
                                       outcome=body.outcome, request_id=body.request_id,
                                       external_id=body.external_id, error=body.error,
                                       now=datetime.now(UTC))
    return ok({"result": result})
