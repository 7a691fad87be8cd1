"""Automatic rebrokerage and queue status, tried as an operator would.

An operator sets a queue offline in the sites file and runs ``dawms sites sync``:
from that moment no server process hands out its jobs (the status is read in the
claim's transaction, not cached), and the scheduler's rebroker moves its queued
jobs elsewhere on its next run; a job a pilot already holds stays with it. Jobs
activated past ``rebroker_after_s`` with no pilot move too, the queue they left
excluded.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from dawms.catalog.db import Database
from dawms.catalog.models import Job, Queue, StateHistory
from dawms.cli import main
from dawms.ddm_bridge.local import LocalDDM
from dawms.scheduler import autorebroker
from dawms.scheduler.config import SchedulerConfig
from dawms.scheduler.runner import Scheduler
from dawms.server.app import create_app
from factories import make_dataset, site_config

pytestmark = pytest.mark.broker
SPEC = {"name": "arb", "transformation": "true {inputs}", "input_datasets": ["arb:raw"],
        "output_dataset": "arb:out.{task_id}", "split": {"files_per_job": 1}}


def toml(cfg: dict) -> str:
    """The site file an operator keeps (TOML; the values are strings, lists, ints)."""
    out = []
    for kind in ("site", "endpoint", "queue"):
        for item in cfg[kind]:
            out.append(f"[[{kind}]]")
            out += [f"{k} = {json.dumps(v)}" for k, v in item.items()]
    return "\n".join(out) + "\n"


@pytest.fixture
def world(db: Database, ddm: LocalDDM, sites: list[str], tmp_path: Path,
          bearer: Callable[..., dict[str, str]]) -> Iterator[tuple[TestClient, TestClient]]:
    """Two server processes' apps over one catalog, 4 jobs activated at SITE_A_PROD."""
    make_dataset(db, ddm, "arb:raw", "SITE_A_DISK", 4, tmp_path)
    other_db = Database(db.url)  # the second server's own engine and event listener
    with TestClient(create_app(db, ddm, SchedulerConfig())) as one, \
            TestClient(create_app(other_db, ddm, SchedulerConfig())) as two:
        for client in (one, two):
            client.headers.update(bearer("admin", "analyst"))
        one.post("/api/v1/task/submit", json=SPEC).raise_for_status()
        one.scheduler = Scheduler(db, ddm)  # type: ignore[attr-defined]
        one.scheduler.run_all_once()  # type: ignore[attr-defined]
        yield one, two
    other_db.broker.close()
    other_db.dispose()


def _acquire(client: TestClient, queue: str = "SITE_A_PROD", n: int = 1) -> dict:
    reply = client.post("/api/v1/pilot/acquire_jobs",
                        json={"queue": queue, "pilot_id": "p", "n_jobs": n})
    reply.raise_for_status()
    return reply.json()


def _placement(db: Database) -> list[tuple[int, str, str]]:
    with db.session() as s:
        return [(j.id, j.state, q) for j, q in s.execute(
            select(Job, Queue.name).join(Queue, Queue.id == Job.queue_id).order_by(Job.id))]


def test_queue_set_offline_by_sites_sync_stops_every_server_and_its_jobs_move(
        db: Database, world: tuple[TestClient, TestClient], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    one, two = world
    assert {(st, q) for _, st, q in _placement(db)} == {("activated", "SITE_A_PROD")}
    held = _acquire(two)["data"]["jobs"][0]  # server two has seen the queue online
    assert held["queue"] == "SITE_A_PROD"

    cfg = site_config(tmp_path / "storage", ["SITE_A", "SITE_B", "SITE_C"])
    cfg["queue"][0]["status"] = "offline"
    path = tmp_path / "sites.toml"
    path.write_text(toml(cfg))
    monkeypatch.setenv("DAWMS_DB_URL", db.url)
    assert main(["sites", "sync", str(path)]) == 0

    for client in (one, two):  # at once, on every server process
        reply = _acquire(client)
        assert reply["data"]["jobs"] == []
        assert "SITE_A_PROD is offline" in reply["message"]

    one.scheduler.run_all_once()  # type: ignore[attr-defined]  # rebroker, broker, transfer
    rows = _placement(db)
    by_state: dict[str, set[str]] = {}
    for _, st, q in rows:
        by_state.setdefault(st, set()).add(q)
    assert by_state["sent"] == {"SITE_A_PROD"}  # the pilot's job stays with its pilot
    assert by_state["closed"] == {"SITE_A_PROD"}
    assert by_state["activated"] <= {"SITE_B_PROD", "SITE_C_PROD"}
    assert sum(st == "activated" for _, st, _ in rows) == 3
    with db.session() as s:
        actors = set(s.scalars(select(StateHistory.actor).where(
            StateHistory.entity == "job", StateHistory.to_state == "closed")))
    assert actors == {"scheduler:rebroker"}
    got = [j for q in ("SITE_B_PROD", "SITE_C_PROD") for j in _acquire(two, q, 10)["data"]["jobs"]]
    assert len(got) == 3  # and pilots there take them


def test_jobs_activated_too_long_move_and_leave_their_queue_behind(
        db: Database, world: tuple[TestClient, TestClient]) -> None:
    cfg = SchedulerConfig(rebroker_after_s=3600)
    now = datetime.now(UTC)
    assert autorebroker.run_once(db, cfg, now=now + timedelta(seconds=3000)) == 0
    assert autorebroker.run_once(db, cfg, now=now + timedelta(seconds=3700)) == 4
    with db.session() as s:
        hints = list(s.scalars(select(Job.broker_hint).where(Job.state == "defined")))
    assert hints == [{"exclude": ["SITE_A_PROD"]}] * 4
    assert autorebroker.run_once(db, cfg, now=now + timedelta(seconds=3700)) == 0


def test_a_queue_set_brokeroff_sheds_its_queued_jobs_too(
        db: Database, world: tuple[TestClient, TestClient]) -> None:
    with db.session() as s:
        s.scalar(select(Queue).where(Queue.name == "SITE_A_PROD")).status = "brokeroff"
    assert autorebroker.run_once(db, SchedulerConfig()) == 4
    with db.session() as s:
        s.scalar(select(Queue).where(Queue.name == "SITE_A_PROD")).status = "online"
    assert autorebroker.run_once(db, SchedulerConfig()) == 0  # nothing left there
