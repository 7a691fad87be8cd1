"""``dawms server`` says where it listens, its database (no password), the DDM
backend and its daemons; a daemon still running when its next periodic run comes
is simply not started again, logged at debug, never as a warning."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from dawms.catalog.db import Database
from dawms.commands.service import banner
from dawms.ddm_bridge.local import LocalDDM
from dawms.scheduler import runner
from dawms.scheduler.config import SchedulerConfig

pytestmark = pytest.mark.cli


def test_banner_hides_the_password_and_names_the_daemons() -> None:
    text = banner("0.0.0.0", 8080, "postgresql+psycopg://alice:s3cret@db.example/dawms",
                  "rucio", "on", ["refiner", "broker"])
    assert "s3cret" not in text and "alice:***@db.example/dawms" in text
    assert "http://0.0.0.0:8080" in text and "DDM: rucio" in text
    assert "daemons: refiner, broker" in text
    assert "none here (--no-scheduler)" in banner("::1", 1, "sqlite:///x.db", "local", "off",
                                                  None)
    assert "http://[::1]:1" in banner("::1", 1, "sqlite:///x.db", "local", "off", None)


def test_server_prints_url_database_ddm_and_daemons_on_start(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    db_url = f"sqlite:///{tmp_path / 'cat.db'}"
    proc = subprocess.Popen([sys.executable, "-m", "dawms", "server", "--port", str(port)],
                            env={**os.environ, "DAWMS_DB_URL": db_url, "DAWMS_AUTH": "on"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 60
        assert proc.stdout is not None
        while not any(line.startswith("  daemons:") for line in lines):
            assert time.monotonic() < deadline and proc.poll() is None, lines
            lines.append(proc.stdout.readline().rstrip("\n"))
    finally:
        proc.terminate()
        proc.wait(20)
    text = "\n".join(lines)
    assert f"dawms server on http://127.0.0.1:{port}" in text
    assert f"database: {db_url}" in text and "DDM: local" in text
    daemons = next(line for line in lines if line.startswith("  daemons:"))
    for name in ("refiner", "broker", "activator", "watcher", "finisher", "carousel"):
        assert name in daemons


def test_an_overlapping_periodic_run_is_skipped_at_debug_not_warned(
        db: Database, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    release, entered = threading.Event(), threading.Event()

    def slow_finisher(_db: Database) -> int:
        entered.set()
        release.wait(30)
        return 0

    monkeypatch.setattr(runner.finisher, "run_once", slow_finisher)
    caplog.set_level(logging.DEBUG)
    sched = runner.Scheduler(db, LocalDDM(), SchedulerConfig(interval_s=0.2))
    sched.start()
    try:
        assert entered.wait(30)
        deadline = time.monotonic() + 30
        while not any(runner.MAX_INSTANCES_TEXT in r.getMessage() for r in caplog.records):
            assert time.monotonic() < deadline, "no periodic run overlapped"
            time.sleep(0.1)
    finally:
        release.set()
        sched.stop()
    overlaps = [r for r in caplog.records if runner.MAX_INSTANCES_TEXT in r.getMessage()]
    assert overlaps and all(r.levelno == logging.DEBUG for r in overlaps), [
        (r.name, r.levelname) for r in overlaps]
