"""Rucio's messages (what hermes sends) turned into dawms' data events, once each.

Hermes delivers the same events two ways: to an Elasticsearch-style HTTP
endpoint as bulk NDJSON (an action line, then the message with its ``id``,
``event_type``, ``payload``, ``created_at``; up to 1,000 per post) and to a
STOMP broker as one JSON body per message. ``parse_body`` reads both (and a
plain JSON object or array); ``apply_messages`` applies them:

- ``rule_ok`` / ``datasetlock_ok`` for a rule we made: the request's files are
  available at its endpoint and the request is done (key ``rucio:rule:<id>:done``,
  the same key the rule poller uses, so the first of message and poll wins);
- ``transfer-done``: that file's replica at the destination is available (cache);
- ``transfer-failed``: one try of the request used up; after ``max_tries`` the
  request fails with a classified error (``ddm.transfer_failed: ...``);
- anything else, or a rule we never made, is acknowledged and changes nothing;
  so is a malformed message inside a bulk (counted ``invalid``: a resend cannot
  mend it, and refusing the post would block hermes' queue for good).

Rucio 41 sends no message when a rule turns STUCK: the poller sees that state.
Nothing here imports rucio, so the server can parse without rucio-clients.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from dawms.catalog.models import DataRequest, File, StorageEndpoint
from dawms.catalog.states import ReplicaState, RequestState
from dawms.ddm_bridge.events import apply_request_outcome, record, record_file_failure

from . import cache

if TYPE_CHECKING:
    from .ddm import RucioDDM

log = logging.getLogger(__name__)
MAX_MESSAGES = 1000  # hermes' bulk
MAX_BODY_BYTES = 16 * 1024 * 1024
MAX_FIELD = 255
RULE_DONE = ("rule_ok", "datasetlock_ok")


class BadMessages(ValueError):
    """The body is not Rucio messages; nothing was applied."""


class TooManyMessages(BadMessages):
    """More messages in one post than hermes ever sends; nothing was applied."""


def done_key(rule_id: str) -> str:
    """The dedup key of "rule complete", whichever source tells us (message or poll)."""
    return f"rucio:rule:{rule_id}:done"


def failed_key(rule_id: str) -> str:
    return f"rucio:rule:{rule_id}:failed"


@dataclass(frozen=True)
class RucioMessage:
    event_type: str  # lower case, as hermes sends it to STOMP
    payload: dict[str, Any]
    created_at: str = ""
    msg_id: str = ""
    invalid: str = ""  # why this one message cannot be used (it is skipped, not retried)


def _message(doc: Any) -> RucioMessage:
    if not isinstance(doc, dict):
        raise BadMessages(f"a message must be a JSON object, not {type(doc).__name__}")
    event_type, payload = doc.get("event_type"), doc.get("payload")
    if not isinstance(event_type, str) or not 0 < len(event_type) <= 64:
        raise BadMessages("a message needs an event_type (a string of at most 64)")
    if isinstance(payload, str):  # Rucio keeps payloads as JSON text
        try:
            payload = json.loads(payload)
        except json.JSONDecodeError:
            raise BadMessages(f"{event_type}: payload is not JSON") from None
    if not isinstance(payload, dict):
        raise BadMessages(f"{event_type}: payload must be an object")
    return RucioMessage(event_type.lower(), payload, str(doc.get("created_at", ""))[:64],
                        str(doc.get("id", ""))[:64])


def parse_body(body: bytes | str) -> list[RucioMessage]:
    """Messages from a hermes post (bulk NDJSON, a JSON object or array) or a STOMP body."""
    if len(body) > MAX_BODY_BYTES:
        raise BadMessages(f"body of {len(body)} bytes is over {MAX_BODY_BYTES}")
    try:
        text = body.decode() if isinstance(body, bytes) else body
    except UnicodeDecodeError:
        raise BadMessages("body is not UTF-8") from None
    text = text.strip()
    if not text:
        return []
    try:
        docs = json.loads(text)
        docs = docs if isinstance(docs, list) else [docs]
    except json.JSONDecodeError:  # bulk NDJSON: action lines, then documents
        docs = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
            except json.JSONDecodeError:
                raise BadMessages(f"line {n} is not JSON") from None
            if isinstance(doc, dict) and len(doc) == 1 and \
                    next(iter(doc)) in ("index", "create"):
                continue
            docs.append(doc)
            if len(docs) > MAX_MESSAGES:
                break
    if len(docs) > MAX_MESSAGES:
        raise TooManyMessages(f"more than {MAX_MESSAGES} messages in one post")
    if len(docs) == 1:  # one message: if it is bad, the caller hears why
        return [_message(docs[0])]
    out = []
    for doc in docs:  # a bulk: one bad message must not hold back the others forever
        try:
            out.append(_message(doc))
        except BadMessages as exc:  # (hermes would resend the whole post on an error)
            out.append(RucioMessage("", {}, invalid=str(exc)))
    return out


def _text(payload: dict[str, Any], key: str) -> str | None:
    value = payload.get(key)
    if value is None:
        return None
    value = str(value)
    return value if 0 < len(value) <= MAX_FIELD else None


def apply_messages(session: Session, ddm: RucioDDM, messages: list[RucioMessage], *,
                   source: str, now: datetime | None = None) -> dict[str, int]:
    """Apply messages in the caller's transaction; returns counts by result."""
    now = now or datetime.now(UTC)
    counts: dict[str, int] = {}
    for msg in messages:
        if msg.invalid:
            log.warning("%s: a message was skipped: %s", source, msg.invalid)
            counts["invalid"] = counts.get("invalid", 0) + 1
            continue
        try:
            result = _apply(session, ddm, msg, source, now)
        except BadMessages as exc:
            log.warning("%s: %s message ignored: %s", source, msg.event_type, exc)
            result = "invalid"
        counts[result] = counts.get(result, 0) + 1
    return counts


def _request_of(session: Session, payload: dict[str, Any]) -> DataRequest | None:
    rule_id = _text(payload, "rule_id") or _text(payload, "rule-id")
    query = select(DataRequest).where(DataRequest.ddm == "rucio")
    if rule_id:
        return session.scalar(query.where(DataRequest.external_id == rule_id))
    dataset = _text(payload, "dataset")  # transfer-*: the rule's DID (our _dis dataset)
    if dataset:
        return session.scalar(query.where(DataRequest.name == dataset)
                              .order_by(DataRequest.id.desc()).limit(1))
    return None


def _apply(session: Session, ddm: RucioDDM, msg: RucioMessage, source: str,
           now: datetime) -> str:
    p = msg.payload
    if msg.event_type in RULE_DONE:
        rule_id = _text(p, "rule_id")
        if rule_id is None:
            raise BadMessages("needs a rule_id")
        req = _request_of(session, p)
        if req is None:
            return "unknown"
        if req.state == RequestState.REQUESTED:
            cache.mark_request_arrived(session, req, now)
        return apply_request_outcome(session, source=source, dedup_key=done_key(rule_id),
                                     outcome="done", external_id=rule_id, now=now)
    if msg.event_type == "transfer-done":
        scope, name, rse = _text(p, "scope"), _text(p, "name"), _text(p, "dst-rse")
        rid = _text(p, "request-id")
        if not (scope and name and rse and rid):
            raise BadMessages("transfer-done needs scope, name, dst-rse and request-id")
        file_id = session.scalar(select(File.id).where(File.scope == scope, File.name == name))
        endpoints = list(session.scalars(select(StorageEndpoint.id).where(
            (StorageEndpoint.rse == rse) | ((StorageEndpoint.rse == "")
                                            & (StorageEndpoint.name == rse)))))
        if file_id is None or not endpoints:
            return "unknown"
        if not record(session, source=source, dedup_key=f"rucio:transfer:{rid}:done",
                      kind="transfer_done", payload={"did": f"{scope}:{name}", "rse": rse},
                      now=now):
            return "duplicate"
        cache.set_replicas(session, {(file_id, e): ReplicaState.AVAILABLE for e in endpoints},
                           reason=f"transfer {rid} done", now=now)
        return "applied"
    if msg.event_type == "transfer-failed":
        rid = _text(p, "request-id")
        if rid is None:
            raise BadMessages("transfer-failed needs a request-id")
        req = _request_of(session, p)
        if req is None:
            return "unknown"
        if not record(session, source=source, dedup_key=f"rucio:transfer:{rid}:failed",
                      kind="transfer_failed", payload={"request_id": req.id,
                                                       "reason": _text(p, "reason") or ""},
                      now=now):
            return "duplicate"
        if req.state != RequestState.REQUESTED:
            return "stale"
        error = (f"ddm.transfer_failed: {p.get('scope')}:{p.get('name')} to "
                 f"{p.get('dst-rse')}: {str(p.get('reason') or 'no reason given')[:500]}")
        file_id = session.scalar(select(File.id).where(File.scope == _text(p, "scope"),
                                                       File.name == _text(p, "name")))
        if file_id is not None:
            record_file_failure(session, req.id, [file_id], error, now)
        report = ddm.count_failure(session, req, error, now)
        if report is None:
            return "counted"
        return apply_request_outcome(session, source=source, dedup_key=report.dedup_key,
                                     outcome=report.outcome.value,
                                     external_id=report.external_id, error=report.error,
                                     now=now)
    return "ignored"
