"""Liveness and readiness, open to anyone (load balancers and orchestrators probe them).

``/healthz`` answers while the process serves (a Kubernetes ``livenessProbe``).
``/readyz`` (a ``readinessProbe``) answers 200 only when the catalog database
answers, its schema is at the newest migration this code knows, and every daemon
of the deployment (the scheduler's and the DDM backend's, run by this process or
another one on the catalog) ran to the end within its bound: 3 periods plus
``DAWMS_READY_SLACK_S``. A daemon that never ran counts as late once the server
has been up longer than its bound. Otherwise 503, with every problem in
``message`` (an error envelope: ``data`` is null).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from sqlalchemy import select, text
from sqlalchemy.exc import SQLAlchemyError

from dawms.catalog.migrate import revisions
from dawms.catalog.models import DaemonLock
from dawms.scheduler.runner import expected_daemons

from .auth import PUBLIC
from .envelope import error_body, ok
from .schemas import Envelope

router = APIRouter(tags=["monitor"])


@router.get("/healthz", response_model=Envelope, dependencies=[Depends(PUBLIC)])
def healthz() -> dict[str, Any]:
    """The process is alive."""
    return ok({"alive": True})


def readiness(request: Request) -> tuple[list[str], dict[str, Any]]:
    """(problems, checks): what keeps this server from being ready, and what was seen."""
    state = request.app.state
    try:
        with state.db.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        current, head = revisions(state.db.engine)
        if current != head:  # the daemons' columns may not even exist yet
            return [f"migrations not current: the database is at {current}, the code at "
                    f"{head} (run `dawms db upgrade`)"], {"database": True}
        with state.db.session() as s:
            rows = {name: at for name, at in s.execute(
                select(DaemonLock.name, DaemonLock.last_success_at))}
    except SQLAlchemyError as exc:
        return [f"database unreachable: {type(exc).__name__}"], {"database": False}
    problems = []
    now = datetime.now(UTC)
    up_s = time.monotonic() - state.started
    daemons: dict[str, float | None] = {}
    for name, interval in expected_daemons(state.ddm, state.cfg).items():
        bound = 3 * interval + state.settings.ready_slack_s
        at = rows.get(name)
        age = None if at is None else (now - at).total_seconds()
        daemons[name] = None if age is None else round(age, 3)
        if age is None and up_s > bound:
            problems.append(f"daemon {name} has not run (bound {bound:.0f} s)")
        elif age is not None and age > bound:
            problems.append(f"daemon {name} last succeeded {age:.0f} s ago "
                            f"(bound {bound:.0f} s)")
    return problems, {"database": True, "migration": current, "head": head,
                      "daemon_last_success_age_s": daemons}


@router.get("/readyz", response_model=Envelope, dependencies=[Depends(PUBLIC)],
            responses={503: {"model": Envelope, "description": "not ready; message says why"}})
def readyz(request: Request) -> Any:
    """Database reachable, migrations current, every daemon within its bound."""
    problems, checks = readiness(request)
    if problems:
        return JSONResponse(error_body(503, "; ".join(problems)), status_code=503)
    return ok(checks)
