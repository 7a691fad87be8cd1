"""The daemon runner: events drive the flow at once; leases keep instances apart."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select

from dawms.catalog import locks
from dawms.catalog.db import Database
from dawms.catalog.models import DaemonLock, Job
from dawms.ddm_bridge.local import LocalDDM
from dawms.scheduler.config import SchedulerConfig
from dawms.scheduler.runner import Scheduler
from dawms.scheduler.task import submit
from factories import make_dataset

SPEC = {"name": "ev", "transformation": "true {inputs}", "input_datasets": ["ev:raw"],
        "output_dataset": "ev:out.{task_id}", "split": {"files_per_job": 1}}


def test_events_carry_a_task_to_activation_without_periodic_runs(
        db: Database, ddm: LocalDDM, sites: list[str], tmp_path: Path) -> None:
    # SITE_A's queue is offline, so every job needs its input copied elsewhere first
    make_dataset(db, ddm, "ev:raw", "SITE_A_DISK", 6, tmp_path)
    with db.session() as s:
        from dawms.catalog.models import Queue

        s.scalar(select(Queue).where(Queue.name == "SITE_A_PROD")).status = "offline"
    hour = 3600.0  # the safety net never fires during this test
    sched = Scheduler(db, ddm, SchedulerConfig(interval_s=hour))
    sched.start()
    try:
        time.sleep(1.0)  # the start-up runs find nothing to do
        with db.session() as s:
            submit(s, SPEC, ddm)
        deadline = time.monotonic() + 30
        while True:
            with db.session() as s:
                states = dict(s.execute(select(Job.state, func.count())
                                        .group_by(Job.state)).all())
            if states == {"activated": 6}:
                break
            assert time.monotonic() < deadline, states
            time.sleep(0.1)
    finally:
        sched.stop()
    runs = {name: d.runs for name, (d, _) in sched.daemons.items()}
    # each step ran because the previous one's committed event woke it
    for name in ("refiner", "broker", "transfer", "activator"):
        assert runs[name] >= 2, runs


def test_one_instance_per_daemon_through_the_lease(db: Database, ddm: LocalDDM) -> None:
    first, second = Scheduler(db, ddm), Scheduler(db, ddm)
    broker_a, broker_b = first.daemons["broker"][0], second.daemons["broker"][0]
    broker_a()
    broker_b()
    assert (broker_a.runs, broker_b.runs, broker_b.skipped) == (1, 0, 1)
    first.stop()  # a clean stop gives the leases back
    broker_b()
    assert broker_b.runs == 1
    with db.session() as s:
        assert s.scalar(select(DaemonLock.holder).where(DaemonLock.name == "broker")) \
            == second.holder


def test_an_expired_lease_is_taken_over(db: Database) -> None:
    now = datetime.now(UTC)
    ttl = timedelta(seconds=60)
    with db.session() as s:
        assert locks.acquire(s, "watcher", "dead-host", ttl, now)
    with db.session() as s:
        assert not locks.acquire(s, "watcher", "alive", ttl, now + timedelta(seconds=30))
        assert locks.acquire(s, "watcher", "dead-host", ttl, now + timedelta(seconds=30))
    with db.session() as s:
        assert locks.acquire(s, "watcher", "alive", ttl, now + timedelta(seconds=120))
        assert s.scalar(select(DaemonLock.holder)) == "alive"
