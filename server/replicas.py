"""Replica endpoints for operators: declare copies bad (``dawms replica declare-bad``).

``POST /api/v1/replica/declare_bad`` with ``replicas`` (``did`` = ``scope:name``,
``endpoint``) and a ``reason``: each copy is marked ``bad`` through the one path the
pilots' reports use (``scheduler/badreplica.py``), so the DDM is told and no job is
dispatched to it again. Each replica gets its own answer in ``data``; a bad name is
a 422 and changes nothing. Operators only (the ``production`` role): a bad mark
makes the DDM copy data again.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from dawms.catalog.names import split_did
from dawms.scheduler.badreplica import declare_named

from .auth import REPLICAS, Principal
from .envelope import ok
from .schemas import Envelope

router = APIRouter(prefix="/api/v1/replica", tags=["replica"])
MAX_REPLICAS = 10_000


class ReplicaRef(BaseModel):
    did: str = Field(min_length=3, max_length=511, description="scope:name of the file")
    endpoint: str = Field(min_length=1, max_length=128, description="the storage endpoint")


class DeclareBad(BaseModel):
    replicas: list[ReplicaRef] = Field(min_length=1, max_length=MAX_REPLICAS)
    reason: str = Field(min_length=1, max_length=2000)


@router.post("/declare_bad", response_model=Envelope)
def declare_bad(body: DeclareBad, request: Request,
                who: Principal = Depends(REPLICAS)) -> dict[str, Any]:
    """Mark replicas bad: per ``scope:name@endpoint`` "bad", "already bad", or why not."""
    items = []
    for ref in body.replicas:  # a name off the grammar: InvalidName, a 400, nothing changed
        scope, name = split_did(ref.did)
        items.append((scope, name, ref.endpoint))
    db, ddm = request.app.state.db, request.app.state.ddm
    with db.session() as s:
        answers, done = declare_named(s, ddm, items, reason=body.reason,
                                      actor=f"user:{who.subject}"[:128])
    return ok({"replicas": answers, "repairing": len(done.repairing),
               "jobs_respecced": len(done.respecced), "jobs_failed": len(done.failed)})
