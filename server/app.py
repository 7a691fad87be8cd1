"""The HTTP face of dawms: one FastAPI app for pilots, users and DDM callbacks.

``create_app`` wires a database, a DDM backend and, in the embedded setup, the
scheduler's daemons into the same process (SQLite: one server process does it
all). The OpenAPI document is served at ``/openapi.json``.

Every route declares its auth rule (``auth.py``); the routers are included with
the envelope's error responses, and each route's body limit (``limits.py``) is
resolved from the settings here. Auth is on unless ``DAWMS_AUTH=off``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio.to_thread
from fastapi import Depends, FastAPI

from dawms import __version__
from dawms.catalog.db import Database, PoolSettings
from dawms.ddm_bridge.abc import DDM
from dawms.scheduler.config import SchedulerConfig
from dawms.scheduler.runner import Scheduler

from . import (
    browse,
    commands,
    envelope,
    explain,
    factory,
    health,
    joblog,
    keys,
    limits,
    manage,
    metrics,
    monitor_api,
    monitor_pages,
    pilot,
    replicas,
    staging,
    user,
)
from . import ddm as ddm_routes
from .auth import ANY
from .schemas import Envelope
from .settings import ServerSettings
from .tokens import Verifier

log = logging.getLogger(__name__)


def create_app(db: Database, ddm: DDM, cfg: SchedulerConfig | None = None, *,
               with_scheduler: bool = False, settings: ServerSettings | None = None) -> FastAPI:
    cfg = cfg or SchedulerConfig()
    settings = settings or ServerSettings()
    verifier = None
    if settings.auth == "on":
        keys.ensure_key(db)  # the first start makes the signing key
        verifier = Verifier(db, settings)
    else:
        log.warning("DAWMS_AUTH=off: every caller without a token is an admin; "
                    "for development on a loopback address only")
    scheduler = Scheduler(db, ddm, cfg) if with_scheduler else None

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # as many request threads as pooled connections: none waits for a connection
        # and the pool never opens (and closes) one per request
        anyio.to_thread.current_default_thread_limiter().total_tokens = \
            PoolSettings().connections
        if scheduler:
            scheduler.start()
        try:
            yield
        finally:
            if scheduler:
                scheduler.stop()

    app = FastAPI(title="dawms", version=__version__, lifespan=lifespan,
                  docs_url=None, redoc_url=None,
                  description="Data-aware workload management: tasks over datasets, "
                              "jobs brokered to the data, pilots that pull them. Every "
                              "operation but /healthz, /readyz and this document needs a "
                              "bearer token; bodies are bounded (x-max-body-bytes).")
    app.state.db, app.state.ddm, app.state.cfg = db, ddm, cfg
    app.state.scheduler = scheduler
    app.state.started = time.monotonic()
    app.state.queue_cache = {}
    app.state.settings, app.state.verifier = settings, verifier
    envelope.install(app)
    app.include_router(health.router)
    metrics.install(app, db)
    for router in (pilot.router, commands.router, user.router, manage.router, ddm_routes.router,
                   factory.router, staging.router, explain.router, browse.router, joblog.router,
                   replicas.router, metrics.router, monitor_api.router):
        app.include_router(router, responses=envelope.ERROR_RESPONSES)
    monitor_pages.install(app)  # the web monitor under /monitor (HTML, not in the schema)

    @app.get("/api/v1/ping", tags=["monitor"], response_model=Envelope,
             responses=envelope.ERROR_RESPONSES, dependencies=[Depends(ANY)])
    def ping() -> dict[str, Any]:
        return envelope.ok({"version": __version__, "scheduler": scheduler is not None})

    app.add_middleware(limits.BodyLimit, fastapi_app=app, settings=settings)
    make_document = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = limits.document(make_document(), settings)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app

