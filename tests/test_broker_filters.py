"""The broker's filters and their reasons, kept per job for ``dawms explain``.

Software tags a task needs and a queue advertises, blacklisted endpoints, pilots
seen recently; each unplaced job keeps every queue's reason in
``job.broker_reasons`` (cleared once it is placed); equal queues share the work
(weighted randomness among the best few) instead of one taking all.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from dawms.catalog.db import Database
from dawms.catalog.models import Job, Queue
from dawms.catalog.site_config import sync, validate
from dawms.ddm_bridge.local import LocalDDM
from dawms.scheduler import broker, refiner
from dawms.scheduler.config import SchedulerConfig
from dawms.scheduler.task import TaskSpecError, submit
from factories import make_dataset, site_config

pytestmark = pytest.mark.broker
SITES = ["SITE_A", "SITE_B", "SITE_C"]


def define(db: Database, ddm: LocalDDM, name: str, did: str, **extra: object) -> None:
    with db.session() as s:
        submit(s, {"name": name, "transformation": "true {inputs}", "input_datasets": [did],
                   "output_dataset": f"t:{name}.{{task_id}}", "split": {"files_per_job": 1},
                   **extra}, ddm)
    assert refiner.run_once(db, ddm) > 0


def resync(db: Database, tmp_path: Path, queues: dict[str, dict] | None = None,
           endpoints: dict[str, dict] | None = None) -> None:
    cfg = site_config(tmp_path / "storage", SITES)
    for q in cfg["queue"]:
        q.update((queues or {}).get(q["name"], {}))
    for e in cfg["endpoint"]:
        e.update((endpoints or {}).get(e["name"], {}))
    with db.session() as s:
        sync(s, validate(cfg), actor="test", source="test")


def placed(db: Database) -> dict[str, int]:
    with db.session() as s:
        return dict(s.execute(select(Queue.name, func.count()).join(Job, Job.queue_id == Queue.id)
                              .group_by(Queue.name)).all())


def reasons(db: Database) -> list[dict | None]:
    with db.session() as s:
        return [r["queues"] if r else None
                for r in s.scalars(select(Job.broker_reasons).order_by(Job.id))]


def test_software_tags_filter_and_every_queues_reason_is_kept_then_cleared(
        db: Database, ddm: LocalDDM, sites: list[str], tmp_path: Path) -> None:
    make_dataset(db, ddm, "sw:raw", "SITE_A_DISK", 2, tmp_path)
    define(db, ddm, "sw", "sw:raw", resources={"software": ["root-6.30"]})
    assert broker.run_once(db, ddm, SchedulerConfig()) == 0
    why = {q: "lacks software root-6.30" for q in ("SITE_A_PROD", "SITE_B_PROD", "SITE_C_PROD")}
    assert reasons(db) == [why, why]
    resync(db, tmp_path, queues={"SITE_C_PROD": {"software": ["root-6.30", "gcc-13"]},
                                 "SITE_B_PROD": {"status": "offline"}})
    assert broker.run_once(db, ddm, SchedulerConfig()) == 2
    assert placed(db) == {"SITE_C_PROD": 2}  # not where the data is: the software is not
    assert reasons(db) == [None, None]


def test_bad_software_tags_are_refused(db: Database, ddm: LocalDDM, sites: list[str]) -> None:
    with db.session() as s, pytest.raises(TaskSpecError, match="resources.software"):
        submit(s, {"name": "x", "transformation": "true", "input_datasets": ["a:b"],
                   "output_dataset": "a:c", "resources": {"software": ["", 3]}}, ddm)


def test_blacklisted_endpoint_keeps_jobs_off_the_queues_using_it(
        db: Database, ddm: LocalDDM, sites: list[str], tmp_path: Path) -> None:
    make_dataset(db, ddm, "bl:raw", "SITE_A_DISK", 3, tmp_path)
    resync(db, tmp_path, endpoints={"SITE_A_DISK": {"blacklisted": True}})
    define(db, ddm, "bl", "bl:raw")
    assert broker.run_once(db, ddm, SchedulerConfig()) == 3
    assert set(placed(db)) <= {"SITE_B_PROD", "SITE_C_PROD"}
    resync(db, tmp_path, queues={"SITE_B_PROD": {"status": "offline"},
                                 "SITE_C_PROD": {"status": "offline"}},
           endpoints={"SITE_A_DISK": {"blacklisted": True}})
    define(db, ddm, "bl2", "bl:raw")
    broker.run_once(db, ddm, SchedulerConfig())
    assert reasons(db)[-1] == {"SITE_A_PROD": "endpoint SITE_A_DISK is blacklisted",
                               "SITE_B_PROD": "queue is offline",
                               "SITE_C_PROD": "queue is offline"}


def test_only_queues_a_pilot_asked_recently_get_jobs_when_configured(
        db: Database, ddm: LocalDDM, sites: list[str], tmp_path: Path) -> None:
    make_dataset(db, ddm, "ps:raw", "SITE_A_DISK", 2, tmp_path)
    define(db, ddm, "ps", "ps:raw")
    now = datetime.now(UTC)
    with db.session() as s:
        for name, ago in (("SITE_A_PROD", 7200), ("SITE_B_PROD", 60)):
            s.scalar(select(Queue).where(Queue.name == name)).last_pilot_at = \
                now - timedelta(seconds=ago)
    cfg = SchedulerConfig(pilot_seen_s=3600)
    assert broker.run_once(db, ddm, cfg, now=now) == 2
    assert placed(db) == {"SITE_B_PROD": 2}


def test_close_queues_share_the_work_instead_of_one_taking_all(
        db: Database, ddm: LocalDDM, sites: list[str], tmp_path: Path) -> None:
    make_dataset(db, ddm, "eq:raw", "SITE_A_DISK", 30, tmp_path)
    define(db, ddm, "eq", "eq:raw")
    cfg = SchedulerConfig(broker_spread=1.0)  # every passing queue is among "the few"
    assert broker.run_once(db, ddm, cfg, rng=random.Random(7)) == 30
    got = placed(db)
    assert len(got) == 3 and min(got.values()) >= 3, got  # nobody herded onto one
    assert got["SITE_A_PROD"] == max(got.values())  # the data still pulls hardest
