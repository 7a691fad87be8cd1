"""A small world for the auth tests: sites, a dataset, two tasks with activated jobs
(one owned by the analyst ``alice``, one by ``prod``), the app over a real catalog,
and a token per role. ``snapshot`` is everything a forbidden call must not change.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from dawms.catalog.db import Database
from dawms.catalog.models import (
    DataRequest,
    DDMEvent,
    Job,
    SigningKey,
    StateHistory,
    Task,
    TokenRevocation,
)
from dawms.ddm_bridge.local import LocalDDM
from dawms.scheduler.config import SchedulerConfig
from dawms.scheduler.runner import Scheduler
from dawms.server.app import create_app
from dawms.server.settings import ServerSettings
from factories import make_dataset

ROLES = ("admin", "production", "analyst", "reader", "pilot", "factory", "ddm")
QUEUES = {"pilot": ["SITE_A_PROD"], "factory": ["SITE_A_PROD"]}


def spec(name: str) -> dict[str, Any]:
    return {"name": name, "transformation": "true {inputs} {output}",
            "input_datasets": ["auth:raw"], "output_dataset": f"auth:{name}.{{task_id}}",
            "split": {"files_per_job": 1}}


@dataclass
class World:
    db: Database
    ddm: LocalDDM
    api: TestClient
    tokens: dict[str, str]
    alice_task: int
    prod_task: int
    extra: dict[str, Any] = field(default_factory=dict)

    def headers(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    def jobs_of(self, task_id: int) -> list[int]:
        with self.db.session() as s:
            return list(s.scalars(select(Job.id).where(Job.task_id == task_id)
                                  .order_by(Job.id)))


def snapshot(db: Database) -> dict[str, list[tuple[Any, ...]]]:
    """Every row a call could change, as plain tuples."""
    with db.session() as s:
        return {
            "task": [tuple(r) for r in s.execute(select(Task.id, Task.state, Task.owner)
                                                 .order_by(Task.id))],
            "job": [tuple(r) for r in s.execute(select(Job.id, Job.state, Job.attempt,
                                                       Job.pilot_id, Job.lease_token,
                                                       Job.command, Job.queue_id)
                                                .order_by(Job.id))],
            "history": [tuple(r) for r in s.execute(select(StateHistory.id)
                                                    .order_by(StateHistory.id))],
            "request": [tuple(r) for r in s.execute(select(DataRequest.id, DataRequest.state)
                                                    .order_by(DataRequest.id))],
            "ddm_event": [tuple(r) for r in s.execute(select(DDMEvent.id))],
            "keys": [tuple(r) for r in s.execute(select(SigningKey.kid,
                                                        SigningKey.retired_at))],
            "revocations": [tuple(r) for r in s.execute(select(TokenRevocation.jti))],
        }


@pytest.fixture
def world(db: Database, ddm: LocalDDM, sites: list[str], tmp_path: Path,
          make_token: Callable[..., str]) -> Iterator[World]:
    make_dataset(db, ddm, "auth:raw", "SITE_A_DISK", 4, tmp_path)
    tokens = {role: make_token(role, f"{role}-user" if role != "analyst" else "alice",
                               QUEUES.get(role, ())) for role in ROLES}
    app = create_app(db, ddm, SchedulerConfig(), settings=ServerSettings(key_cache_s=0))
    with TestClient(app, raise_server_exceptions=False) as api:
        alice = api.post("/api/v1/task/submit", json=spec("alice"),
                         headers={"Authorization": f"Bearer {tokens['analyst']}"})
        prod = api.post("/api/v1/task/submit", json=spec("prod"),
                        headers={"Authorization": f"Bearer {tokens['production']}"})
        assert alice.status_code == prod.status_code == 200, (alice.text, prod.text)
        Scheduler(db, ddm).run_all_once()
        yield World(db, ddm, api, tokens, alice.json()["data"]["task_id"],
                    prod.json()["data"]["task_id"])
