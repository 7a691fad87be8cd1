"""``/readyz``: database reachable, migrations current, every daemon within its bound.

Checked on a live app over a real catalog: ready once the daemons ran; 503 naming
the late daemon when its last success is older than its bound (its lease row is
moved back in time, as a scheduler that stopped would leave it); 503 naming the
migration when the schema is one behind; 503 naming a daemon that never ran once
the server is older than the bound.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from dawms.catalog.db import Database
from dawms.catalog.migrate import downgrade, upgrade
from dawms.catalog.models import DaemonLock
from dawms.ddm_bridge.local import LocalDDM
from dawms.scheduler.config import SchedulerConfig
from dawms.scheduler.runner import Scheduler, expected_daemons
from dawms.server.app import create_app
from dawms.server.settings import ServerSettings

pytestmark = pytest.mark.ops


def _problems(api: TestClient) -> tuple[int, str]:
    reply = api.get("/readyz")
    return reply.status_code, reply.json()["message"]


def test_readyz_checks_migrations_and_every_daemon(db: Database, ddm: LocalDDM,
                                                   world: Path) -> None:
    cfg = SchedulerConfig(interval_s=1.0)
    app = create_app(db, ddm, cfg, settings=ServerSettings(ready_slack_s=5))
    with TestClient(app) as api:
        assert _problems(api)[0] == 200  # just started: the daemons have their grace
        scheduler = Scheduler(db, ddm, cfg)  # one instance: it holds the daemons' leases
        scheduler.run_all_once()
        reply = api.get("/readyz")
        assert reply.status_code == 200, reply.text
        ages = reply.json()["data"]["daemon_last_success_age_s"]
        assert set(ages) == set(expected_daemons(ddm, cfg)) and None not in ages.values()
        with db.session() as s:  # the broker last succeeded a minute ago: late
            s.execute(update(DaemonLock).where(DaemonLock.name == "broker").values(
                last_success_at=datetime.now(UTC) - timedelta(seconds=60)))
        code, message = _problems(api)
        assert code == 503 and "daemon broker last succeeded 60 s ago (bound 8 s)" in message
        assert "refiner" not in message
        scheduler.run_all_once()
        assert _problems(api)[0] == 200
        downgrade(db.engine, "0007")
        code, message = _problems(api)
        assert code == 503 and "migrations not current: the database is at 0007" in message
        upgrade(db.engine)
        assert _problems(api)[0] == 200
        app.state.started -= 3600  # an hour up, and a daemon that never ran
        with db.session() as s:
            s.execute(update(DaemonLock).where(DaemonLock.name == "finisher")
                      .values(last_success_at=None))
        code, message = _problems(api)
        assert code == 503 and "daemon finisher has not run" in message
