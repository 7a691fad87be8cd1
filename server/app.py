"""The HTTP face of dawms: one FastAPI app for pilots, users and DDM callbacks.

``create_app`` wires a database, a DDM backend and, in the embedded setup, the
scheduler's daemons into the same process (SQLite: one server process does it
all). The OpenAPI document is served at ``/openapi.json``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from dawms import __version__
from dawms.catalog.db import Database
from dawms.ddm_bridge.abc import DDM
from dawms.scheduler.config import SchedulerConfig
from dawms.scheduler.runner import Scheduler

from . import ddm as ddm_routes
from . import envelope, pilot, staging, user


def create_app(db: Database, ddm: DDM, cfg: SchedulerConfig | None = None, *,
               with_scheduler: bool = False) -> FastAPI:
    cfg = cfg or SchedulerConfig()
    scheduler = Scheduler(db, ddm, cfg) if with_scheduler else None

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if scheduler:
            scheduler.start()
        try:
            yield
        finally:
            if scheduler:
                scheduler.stop()

    app = FastAPI(title="dawms", version=__version__, lifespan=lifespan,
                  description="Data-aware workload management: tasks over datasets, "
                              "jobs brokered to the data, pilots that pull them.")
    app.state.db, app.state.ddm, app.state.cfg = db, ddm, cfg
    app.state.scheduler = scheduler
    app.state.queue_cache = {}
    envelope.install(app)
    app.include_router(pilot.router)
    app.include_router(user.router)
    app.include_router(ddm_routes.router)
    app.include_router(staging.router)

    @app.get("/api/v1/ping", tags=["monitor"])
    def ping() -> dict[str, Any]:
        return envelope.ok({"version": __version__, "scheduler": scheduler is not None})

    return app
