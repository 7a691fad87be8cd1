"""DDM callbacks over HTTP: a data request ended, or Rucio's messages as hermes posts them.

``/api/v1/ddm/event`` takes dawms' own form (one outcome, with its dedup key), or
a bulk of up to 1,000 (``{"events": [...]}``), each event of a bulk answered alone.
``/api/v1/ddm/rucio/messages`` (also reachable as ``.../rucio/_bulk``, so hermes'
``elastic_endpoint`` can point at it as at Elasticsearch) takes hermes'
bulk NDJSON (up to 1,000 messages a post), a JSON object or a JSON array, and
answers 200 only after every message is committed: hermes deletes what it sent
only on 200 and resends the rest, and the dedup keys make a resend harmless.

Every route takes the ``DDM`` rule: a ``ddm`` bearer token or, as Rucio's hermes
can only do, HTTP Basic credentials of a configured DDM user. The Rucio route's
body limit is the ``rucio`` per-route limit, which is the parser's own bound
(``MAX_BODY_BYTES``), so the middleware and the parser refuse at the same size.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool

from dawms.ddm_bridge.events import apply_request_outcome
from dawms.ddm_bridge.rucio.messages import (
    MAX_BODY_BYTES,
    BadMessages,
    TooManyMessages,
    apply_messages,
    parse_body,
)

from .auth import DDM
from .envelope import DB_ERRORS, error_body, ok
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


class PayloadTooLarge(BadMessages):
    """More than a hermes post ever holds."""


async def _bounded_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"body of {declared} bytes is over {MAX_BODY_BYTES}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise PayloadTooLarge(f"body is over {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


@router.post("/rucio/messages", response_model=None, openapi_extra=body_limit("rucio"))
@router.post("/rucio/_bulk", response_model=None, include_in_schema=False,
             openapi_extra=body_limit("rucio"))
async def rucio_messages(request: Request, who: Principal = Depends(DDM)) -> Any:
    """Store Rucio's messages (hermes' elastic bulk NDJSON, or JSON); 200 once committed."""
    from fastapi.responses import JSONResponse

    def refuse(status: int, message: str) -> JSONResponse:
        return JSONResponse(error_body(status, message, errors=True), status_code=status)

    ddm = request.app.state.ddm
    if getattr(ddm, "name", "") != "rucio":
        return refuse(400, f"this server's DDM is {getattr(ddm, 'name', '?')!r}, not 'rucio'")
    try:
        messages = parse_body(await _bounded_body(request))
    except (PayloadTooLarge, TooManyMessages) as exc:
        return refuse(413, str(exc))
    except BadMessages as exc:
        return refuse(400, str(exc))

    def store() -> dict[str, int]:
        with request.app.state.db.session() as s:
            return apply_messages(s, ddm, messages, source="http", now=datetime.now(UTC))

    counts = await run_in_threadpool(store)
    return {**ok({"messages": len(messages), "results": counts}), "errors": False}
