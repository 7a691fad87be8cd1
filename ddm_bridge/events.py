"""Inbound data events, made idempotent.

A DDM tells us a request ended by a callback (HTTP, STOMP), or our poller finds
out. Either way the event is kept once under its dedup key; a duplicate, or a
late event about a request that already ended, changes nothing. The request's
state then moves through the one transition path, whose committed event wakes
the activator at once.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prometheus_client import Counter
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dawms.catalog.models import DataRequest, DataRequestFile, DDMEvent
from dawms.catalog.states import Entity, RequestState
from dawms.catalog.transition import transition_many

from .abc import RequestReport

# every data event this process took, by where it came from, its outcome and what it did
# (applied | duplicate | stale): duplicates and reordering show here, not in the catalog
DDM_EVENTS = Counter("dawms_ddm_events", "DDM events taken, by source, outcome and result",
                     ["source", "outcome", "result"])

OUTCOMES = {"done": RequestState.DONE, "failed": RequestState.FAILED,
            "cancelled": RequestState.CANCELLED}


def record(session: Session, *, source: str, dedup_key: str, kind: str,
           payload: dict[str, Any], now: datetime) -> bool:
    """Keep the event once; False when its dedup key was seen before."""
    if session.scalar(select(DDMEvent.id).where(DDMEvent.dedup_key == dedup_key)):
        return False
    try:
        with session.begin_nested():
            session.add(DDMEvent(dedup_key=dedup_key, source=source, kind=kind,
                                 payload=payload, received_at=now))
    except IntegrityError:  # a concurrent receiver kept it first
        return False
    return True


def apply_request_outcome(session: Session, *, source: str, dedup_key: str,
                          outcome: str, now: datetime, request_id: int | None = None,
                          external_id: str | None = None, error: str = "") -> str:
    """Apply "request ended" once. Returns what happened: applied | duplicate | stale.

    Raises LookupError for a request we never made and ValueError for an unknown
    outcome; both are the caller's bad input and nothing is written.
    """
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome must be one of {sorted(OUTCOMES)}, not {outcome!r}")
    query = select(DataRequest)
    if request_id is not None:
        query = query.where(DataRequest.id == request_id)
    elif external_id is not None:
        query = query.where(DataRequest.external_id == external_id)
    else:
        raise ValueError("an event must name request_id or external_id")
    req = session.scalar(query)
    if req is None:
        raise LookupError(f"no data request {request_id or external_id!r}")
    result = _apply(session, req, source=source, dedup_key=dedup_key, outcome=outcome,
                    now=now, error=error)
    DDM_EVENTS.labels(source[:32], outcome, result).inc()
    return result


def _apply(session: Session, req: DataRequest, *, source: str, dedup_key: str, outcome: str,
           now: datetime, error: str) -> str:
    if not record(session, source=source, dedup_key=dedup_key, kind=f"request_{outcome}",
                  payload={"request_id": req.id, "external_id": req.external_id,
                           "error": error}, now=now):
        return "duplicate"
    if req.state != RequestState.REQUESTED:
        return "stale"
    values = {"error": error[:2000]} if error else {}
    moved = transition_many(session, Entity.REQUEST, [req.id], OUTCOMES[outcome],
                            expected=RequestState.REQUESTED, actor=f"ddm:{source}",
                            reason=error or f"request {outcome}", values=values, now=now)
    return "applied" if moved else "stale"


def apply_reports(session: Session, reports: list[RequestReport], *, source: str,
                  now: datetime) -> dict[str, int]:
    """Apply what a backend's ``poll()`` reported; returns counts by result."""
    counts: dict[str, int] = {}
    for rep in reports:
        try:
            result = apply_request_outcome(
                session, source=source, dedup_key=rep.dedup_key, outcome=rep.outcome.value,
                request_id=rep.request_id, external_id=rep.external_id, error=rep.error,
                now=now)
        except LookupError:  # a report about a request we never made
            result = "unknown"
        counts[result] = counts.get(result, 0) + 1
    return counts


def record_file_failure(session: Session, request_id: int, file_ids: list[int], error: str,
                        now: datetime) -> int:
    """Keep ``error`` as the last failure of each of ``file_ids`` in request ``request_id``
    (and count it), so ``dawms explain`` can say why a file is not there. Not a state
    change: the request's outcome is still the backend's report."""
    if not file_ids:
        return 0
    res = session.execute(update(DataRequestFile).where(
        DataRequestFile.request_id == request_id, DataRequestFile.file_id.in_(file_ids))
        .values(error=error[:2000], failures=DataRequestFile.failures + 1, failed_at=now))
    return int(res.rowcount or 0)
