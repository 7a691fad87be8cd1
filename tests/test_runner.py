"""The daemon runner: events drive the flow at once; leases keep instances apart; a
daemon that took a full bunch runs again at once instead of waiting for the interval."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select

from dawms.catalog import locks
from dawms.catalog.db import Database
from dawms.catalog.models import DaemonLock, DataRequest, Job, Queue, StorageEndpoint
from dawms.ddm_bridge.abc import Ran
from dawms.ddm_bridge.local import LocalDDM, transfer
from dawms.scheduler import activator, broker, refiner
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


# ------------------------------------------------------------ full bunches
HOUR = 3600.0  # no periodic run fires during these tests: only a start or an event


def wait_for(what: Callable[[], object], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, "not reached before the deadline"
        time.sleep(0.05)


def job_states(db: Database) -> dict[str, int]:
    with db.session() as s:
        return dict(s.execute(select(Job.state, func.count()).group_by(Job.state)).all())


def test_one_wake_up_brokers_three_full_bunches_at_once(
        db: Database, sites: list[str], tmp_path: Path) -> None:
    ddm = LocalDDM(transfer_interval_s=HOUR)
    make_dataset(db, ddm, "ev:raw", "SITE_A_DISK", 15, tmp_path)  # 3 bunches of 5
    sched = Scheduler(db, ddm, SchedulerConfig(interval_s=HOUR, broker_bunch=5))
    sched.start()
    try:
        # the start-up runs are over (nothing to do), so only an event can move things
        wait_for(lambda: all(d.runs for d, _ in sched.daemons.values()))
        with db.session() as s:
            submit(s, SPEC, ddm)  # wakes the refiner, whose 15 new jobs wake the broker
        # every job brokered (the broker picks among the best few queues: some may be
        # assigned elsewhere, their data requested)
        wait_for(lambda: set(job_states(db)) <= {"activated", "assigned"}
                 and sum(job_states(db).values()) == 15)
    finally:
        sched.stop()
    brokers = sched.daemons["broker"][0]
    assert brokers.full_runs == 3, (brokers.runs, brokers.full_runs)


def test_a_backend_daemon_drains_full_bunches_at_once(
        db: Database, sites: list[str], tmp_path: Path) -> None:
    """The local DDM's transfer worker takes 5 requests a run: 15 are done from one
    start, not one bunch per (hour-long) interval."""
    ddm = LocalDDM(transfer_interval_s=HOUR)
    make_dataset(db, ddm, "ev:raw", "SITE_A_DISK", 15, tmp_path)
    with db.session() as s:
        dest = s.scalar(select(StorageEndpoint).where(StorageEndpoint.name == "SITE_B_DISK"))
        for f in ddm.list_files(s, "ev:raw"):  # one request per file: 15 requests
            ddm.request_replication(s, [f], dest, name=f"dis.{f.name}")
    sched = Scheduler(db, ddm, SchedulerConfig(interval_s=HOUR))
    sched.start()
    try:
        def all_done() -> bool:
            with db.session() as s:
                return set(s.scalars(select(DataRequest.state))) == {"done"}
        wait_for(all_done)
    finally:
        sched.stop()
    worker = sched.daemons["transfer"][0]
    assert worker.full_runs == 3, (worker.runs, worker.full_runs)


def test_each_daemon_says_when_its_bunch_was_full(
        db: Database, ddm: LocalDDM, sites: list[str], tmp_path: Path) -> None:
    make_dataset(db, ddm, "ev:raw", "SITE_A_DISK", 6, tmp_path)
    with db.session() as s:
        for q in s.scalars(select(Queue)):
            q.status = "offline"  # nothing can be brokered: every job will wait
        for i in range(3):
            submit(s, {**SPEC, "name": f"ev{i}"}, ddm)
    first = refiner.run_once(db, ddm, limit=2)
    assert (first, first.full) == (12, True)  # 2 tasks of 6 jobs: maybe more tasks
    last = refiner.run_once(db, ddm, limit=2)
    assert (last, last.full) == (6, False)
    cfg = SchedulerConfig(broker_bunch=18)
    waited = broker.run_once(db, ddm, cfg)
    # no job got a queue, but all 18 moved on (defined -> waiting): there may be more
    assert (waited, waited.full, job_states(db)) == (0, True, {"waiting": 18})
    again = broker.run_once(db, ddm, cfg)
    # the same 18 waiting jobs, still nowhere to go: not full, or the runner would spin
    assert (again, again.full) == (0, False)
    with db.session() as s:
        for q in s.scalars(select(Queue)):
            q.status = "online"
    placed = broker.run_once(db, ddm, SchedulerConfig(broker_bunch=10))
    assert (placed, placed.full) == (10, True)
    rest = broker.run_once(db, ddm, SchedulerConfig(broker_bunch=10))
    assert (rest, rest.full) == (8, False)
    assert activator.run_once(db, ddm, cfg) == Ran(0, full=False)
    assert isinstance(transfer.run_once(db), Ran)


def test_a_full_run_is_followed_at_once_and_an_idle_one_is_not(db: Database,
                                                               ddm: LocalDDM) -> None:
    results = [Ran(5, full=True), Ran(5, full=True), Ran(2, full=False), Ran(9, full=True),
               3]  # a plain int is never full
    sched = Scheduler(db, ddm)
    daemon = type(sched.daemons["broker"][0])("counted", lambda: results.pop(0))
    daemon()  # one call: three runs, the last one not full
    assert (daemon.runs, daemon.full_runs, len(results)) == (3, 2, 2)
    daemon()
    assert (daemon.runs, daemon.full_runs, results) == (5, 3, [])


def test_the_activator_is_full_only_when_it_moved_jobs(
        db: Database, ddm: LocalDDM, sites: list[str], tmp_path: Path) -> None:
    make_dataset(db, ddm, "ev:raw", "SITE_A_DISK", 4, tmp_path)
    with db.session() as s:
        s.scalar(select(Queue).where(Queue.name == "SITE_A_PROD")).status = "offline"
        submit(s, SPEC, ddm)
    refiner.run_once(db, ddm)
    broker.run_once(db, ddm, SchedulerConfig())
    assert job_states(db) == {"assigned": 4}
    cfg = SchedulerConfig(activator_bunch=4)
    waiting = activator.run_once(db, ddm, cfg)
    # a whole bunch looked at, none could move: not full, or the runner would spin
    assert (waiting, waiting.full) == (0, False)
    transfer.run_once(db)
    moved = activator.run_once(db, ddm, cfg)
    assert (moved, moved.full) == (4, True)
