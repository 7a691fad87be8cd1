"""Liveness and readiness, open to anyone (load balancers and orchestrators probe them).

``/healthz`` answers while the process serves; ``/readyz`` also runs one query on
the catalog and answers 503 when the database cannot be reached.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from .auth import PUBLIC
from .envelope import error_body, ok
from .schemas import Envelope

router = APIRouter(tags=["monitor"])


@router.get("/healthz", response_model=Envelope, dependencies=[Depends(PUBLIC)])
def healthz() -> dict[str, Any]:
    """The process is alive."""
    return ok({"alive": True})


@router.get("/readyz", response_model=Envelope, dependencies=[Depends(PUBLIC)],
            responses={503: {"model": Envelope, "description": "the database is unreachable"}})
def readyz(request: Request) -> Any:
    """The catalog database answers."""
    try:
        with request.app.state.db.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        return JSONResponse(error_body(503, f"database unreachable: {type(exc).__name__}"),
                            status_code=503)
    return ok({"database": True})
