"""Drives the daemons: APScheduler 3.11 runs each ``run_once`` periodically, and
committed catalog events wake the one that should react at once.

A task registered wakes the refiner; jobs defined wake the broker; a data
request made wakes the transfer worker (local DDM); a request ended wakes the
activator with that request's id; a job or task ended wakes the finisher. A
wake-up while the daemon runs is remembered and served right after, so no event
is lost; the periodic run stays the safety net and the DB the only record.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from dawms.catalog import events
from dawms.catalog.db import Database
from dawms.catalog.states import JOB_FINAL, Entity, JobState, RequestState, TaskState
from dawms.ddm_bridge import transfer
from dawms.ddm_bridge.abc import DDM

from . import activator, broker, finisher, refiner, watcher
from .config import SchedulerConfig

log = logging.getLogger(__name__)


class _Daemon:
    """One daemon: never two runs at once; wake-ups during a run cause one more run."""

    def __init__(self, name: str, fn: Callable[[], object]) -> None:
        self.name, self.fn = name, fn
        self._lock = threading.Lock()
        self._running = False
        self._again = False
        self.runs = 0

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
                    self.fn()
                except Exception:
                    log.exception("daemon %s failed; the next run will try again", self.name)
                self.runs += 1
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
        self.daemons: dict[str, tuple[_Daemon, float]] = {
            "refiner": (_Daemon("refiner", lambda: refiner.run_once(db, ddm)), cfg.interval_s),
            "broker": (_Daemon("broker", lambda: broker.run_once(db, ddm, cfg)), cfg.interval_s),
            "activator": (_Daemon("activator", self._activate), cfg.interval_s),
            "watcher": (_Daemon("watcher", lambda: watcher.run_once(db, cfg)), cfg.interval_s),
            "finisher": (_Daemon("finisher", lambda: finisher.run_once(db)), cfg.interval_s),
            "ddm_poller": (_Daemon("ddm_poller", self._poll), cfg.interval_s),
        }
        if ddm.name == "local":
            self.daemons["transfer"] = (_Daemon("transfer", lambda: transfer.run_once(db)),
                                        cfg.transfer_interval_s)
        self._aps = BackgroundScheduler(executors={"default": ThreadPoolExecutor(8)},
                                        job_defaults={"coalesce": True, "max_instances": 1,
                                                      "misfire_grace_time": None},
                                        timezone=UTC)
        self._unsubscribe: Callable[[], None] | None = None

    def _activate(self) -> None:
        with self._req_lock:
            ids, self._pending_requests = sorted(self._pending_requests), set()
        if ids:  # the fast path first: jobs of the requests that just ended
            activator.run_once(self.db, self.ddm, self.cfg, request_ids=ids)
        activator.run_once(self.db, self.ddm, self.cfg)

    def _poll(self) -> None:
        with self.db.session() as s:
            self.ddm.poll(s, datetime.now(UTC))

    def run_all_once(self) -> None:
        """Every daemon once, in flow order (for tests and `dawms scheduler --once`)."""
        for name in ("refiner", "broker", "transfer", "ddm_poller", "activator", "watcher",
                     "finisher"):
            if name in self.daemons:
                self.daemons[name][0]()

    def wake(self, name: str) -> None:
        if name in self.daemons and self._aps.running:
            self._aps.add_job(self.daemons[name][0], id=f"wake-{name}", replace_existing=True)

    def _on_event(self, ev: events.StateChanged) -> None:
        if ev.entity == Entity.TASK and ev.to_state == TaskState.REGISTERED:
            self.wake("refiner")
        elif ev.entity == Entity.JOB and ev.to_state == JobState.DEFINED:
            self.wake("broker")
        elif ev.entity == Entity.REQUEST and ev.to_state == RequestState.REQUESTED:
            self.wake("transfer")
        elif ev.entity == Entity.REQUEST:
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
