"""Drives the daemons: APScheduler 3.11 runs each ``run_once`` periodically, and
committed catalog events wake the one that should react at once.

A task registered wakes the refiner; jobs defined wake the broker; the daemons
the DDM backend declares (the local DDM's transfer worker) run beside these and
wake on the changes they name; a request ended wakes the
activator with that request's id; a job or task ended wakes the finisher; a
replica becoming available, a request ending, a task going to staging or ending
wakes the carousel. A
wake-up while the daemon runs is remembered and served right after, so no event
is lost; the periodic run stays the safety net and the DB the only record.
Several instances may share a catalog: before each run a daemon renews its
lease in the DB (``catalog.locks``), and skips the run while another holds it.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from dawms import carousel
from dawms.catalog import events, locks
from dawms.catalog.db import Database
from dawms.catalog.states import (
    JOB_FINAL,
    TASK_FINAL,
    Entity,
    JobState,
    RequestState,
    TaskState,
)
from dawms.ddm_bridge.abc import DDM
from dawms.ddm_bridge.events import apply_reports

from . import activator, broker, finisher, refiner, watcher
from .config import SchedulerConfig

log = logging.getLogger(__name__)
# a file arrived, a recall ended, a task went to staging or ended (its copies may go)
CAROUSEL_WAKES = {(Entity.REPLICA.value, "available"), (Entity.TASK.value, TaskState.STAGING.value),
                  *((Entity.REQUEST.value, st.value) for st in RequestState
                    if st != RequestState.REQUESTED),
                  *((Entity.TASK.value, st.value) for st in TASK_FINAL)}


class _Daemon:
    """One daemon: never two runs at once; wake-ups during a run cause one more run."""

    def __init__(self, name: str, fn: Callable[[], object],
                 lease: Callable[[str], bool] | None = None) -> None:
        self.name, self.fn, self.lease = name, fn, lease
        self._lock = threading.Lock()
        self._running = False
        self._again = False
        self.runs = 0
        self.skipped = 0  # runs left to the instance holding the lease

    def __call__(self) -> None:
        with self._lock:
            if self._running:
                self._again = True
                return
            self._running = True
        try:
            while True:
                self._again = False
                try:
                    if self.lease is None or self.lease(self.name):
                        self.fn()
                        self.runs += 1
                    else:
                        self.skipped += 1
                except Exception:
                    log.exception("daemon %s failed; the next run will try again", self.name)
                with self._lock:
                    if not self._again:
                        self._running = False
                        return
        except BaseException:
            with self._lock:
                self._running = False
            raise


class Scheduler:
    """All daemons of one scheduler instance over one database."""

    def __init__(self, db: Database, ddm: DDM, cfg: SchedulerConfig | None = None) -> None:
        self.db, self.ddm, self.cfg = db, ddm, cfg or SchedulerConfig()
        self._pending_requests: set[int] = set()
        self._req_lock = threading.Lock()
        cfg = self.cfg
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._lease_ttl = timedelta(seconds=max(60.0, 3 * cfg.interval_s))
        fns: dict[str, tuple[Callable[[], object], float]] = {
            "refiner": (lambda: refiner.run_once(db, ddm), cfg.interval_s),
            "broker": (lambda: broker.run_once(db, ddm, cfg), cfg.interval_s),
            "activator": (self._activate, cfg.interval_s),
            "watcher": (lambda: watcher.run_once(db, cfg), cfg.interval_s),
            "finisher": (lambda: finisher.run_once(db), cfg.interval_s),
            "ddm_poller": (self._poll, cfg.interval_s),
            "carousel": (lambda ccfg=carousel.CarouselConfig.from_env():
                         carousel.run_once(db, ddm, cfg=ccfg), cfg.interval_s),
        }
        self._backend_wakes: dict[tuple[str, str], list[str]] = {}
        for spec in ddm.daemons():  # what the configured backend needs, nothing else
            fns[spec.name] = (lambda run=spec.run_once: run(db), spec.interval_s)
            for key in spec.wake_on:
                self._backend_wakes.setdefault(key, []).append(spec.name)
        self.daemons: dict[str, tuple[_Daemon, float]] = {
            name: (_Daemon(name, fn, self._lease), interval)
            for name, (fn, interval) in fns.items()}
        self._aps = BackgroundScheduler(executors={"default": ThreadPoolExecutor(8)},
                                        job_defaults={"coalesce": True, "max_instances": 1,
                                                      "misfire_grace_time": None},
                                        timezone=UTC)
        self._unsubscribe: Callable[[], None] | None = None

    def _lease(self, name: str) -> bool:
        with self.db.session() as s:
            return locks.acquire(s, name, self.holder, self._lease_ttl, datetime.now(UTC))

    def _activate(self) -> None:
        with self._req_lock:
            ids, self._pending_requests = sorted(self._pending_requests), set()
        if ids:  # the fast path first: jobs of the requests that just ended
            activator.run_once(self.db, self.ddm, self.cfg, request_ids=ids)
        activator.run_once(self.db, self.ddm, self.cfg)

    def _poll(self) -> None:
        now = datetime.now(UTC)
        with self.db.session() as s:
            apply_reports(s, self.ddm.poll(s, now), source="poll", now=now)

    def run_all_once(self) -> None:
        """Every daemon once, in flow order (for tests and `dawms scheduler --once`)."""
        for name in ("refiner", "broker", "transfer", "tape", "ddm_poller", "carousel",
                     "activator", "watcher", "finisher"):
            if name in self.daemons:
                self.daemons[name][0]()

    def wake(self, name: str) -> None:
        if name in self.daemons and self._aps.running:
            self._aps.add_job(self.daemons[name][0], id=f"wake-{name}", replace_existing=True)

    def _on_event(self, ev: events.StateChanged) -> None:
        for name in self._backend_wakes.get((ev.entity, ev.to_state), ()):
            self.wake(name)
        if (ev.entity, ev.to_state) in CAROUSEL_WAKES:
            self.wake("carousel")
        if ev.entity == Entity.TASK and ev.to_state == TaskState.REGISTERED:
            self.wake("refiner")
        elif ev.entity == Entity.JOB and ev.to_state == JobState.DEFINED:
            self.wake("broker")
        elif ev.entity == Entity.REQUEST and ev.to_state != RequestState.REQUESTED:
            with self._req_lock:
                self._pending_requests.update(ev.ids)
            self.wake("activator")
        elif ev.entity == Entity.JOB and ev.to_state in JOB_FINAL:
            self.wake("finisher")

    def start(self) -> None:
        for name, (daemon, interval) in self.daemons.items():
            self._aps.add_job(daemon, "interval", seconds=interval, id=name,
                              next_run_time=datetime.now(UTC))
        self._unsubscribe = events.subscribe(self._on_event)
        self._aps.start()
        log.info("scheduler started: %s", ", ".join(self.daemons))

    def stop(self) -> None:
        if self._unsubscribe:
            self._unsubscribe()
        if self._aps.running:
            self._aps.shutdown(wait=True)
        with self.db.session() as s:
            locks.release(s, self.holder)
