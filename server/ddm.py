"""DDM callbacks over HTTP: data requests ended. Kept once per dedup key.

Callers authenticate with a ``ddm`` bearer token or, as Rucio's hermes can only
do, HTTP Basic credentials of a configured DDM user. One event or a bulk of up to
1,000 (hermes posts in bulk) per request; each event of a bulk is answered alone.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Request

from dawms.ddm_bridge.events import apply_request_outcome

from .auth import DDM
from .envelope import DB_ERRORS, ok
from .limits import body_limit
from .schemas import DDMEventIn, DDMEventsIn, Envelope
from .tokens import Principal

router = APIRouter(prefix="/api/v1/ddm", tags=["ddm"])


def _apply(request: Request, body: DDMEventIn) -> str:
    with request.app.state.db.session() as s:
        return apply_request_outcome(s, source=body.source, dedup_key=body.dedup_key,
                                     outcome=body.outcome, request_id=body.request_id,
                                     external_id=body.external_id, error=body.error,
                                     now=datetime.now(UTC))


@router.post("/event", response_model=Envelope, openapi_extra=body_limit("ddm"))
def ddm_event(body: DDMEventIn | DDMEventsIn, request: Request,
              who: Principal = Depends(DDM)) -> dict[str, Any]:
    """Apply "request ended"; duplicates and late events are acknowledged, not applied.

    A bulk (``{"events": [...]}``) answers one result per event, in order."""
    if isinstance(body, DDMEventIn):
        return ok({"result": _apply(request, body)})
    results: list[dict[str, Any]] = []
    for event in body.events:
        try:
            results.append({"dedup_key": event.dedup_key, "result": _apply(request, event)})
        except (LookupError, ValueError, *DB_ERRORS) as exc:
            results.append({"dedup_key": event.dedup_key, "result": "refused",
                            "message": str(exc)[:500]})
    return ok({"results": results})
