"""Two processes on PostgreSQL: a DDM callback taken by the server wakes the scheduler.

``dawms server --no-scheduler`` and ``dawms scheduler`` run as separate processes
over one catalog, the scheduler's periodic runs an hour apart, so only an event
can explain an activation. The test plays the DDM: jobs wait on its replication
requests (it holds their transfer lease, so the scheduler's own transfer worker
leaves them alone), it puts the files in place, then calls back over HTTP; the
server commits "request done", whose NOTIFY must wake the activator in the
other process at once.

The scheduler runs every daemon once when it starts. So that this start-up run
cannot be what activates the jobs, the test inserts the activator's lease row
for itself in a transaction it keeps open while the scheduler starts, sees the
scheduler's attempt to take the lease wait on that row, puts the files in place,
commits (the attempt then fails on the live lease and skips the run), waits for
that attempt to end, and only then gives the lease up: from there on only a
wake-up runs the activator.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import delete, func, insert, select, text, update
from sqlalchemy.orm import aliased

from dawms.catalog.db import Database
from dawms.catalog.models import (
    DaemonLock,
    DataRequest,
    DataRequestFile,
    File,
    Job,
    Queue,
    Replica,
    StateHistory,
    StorageEndpoint,
)
from dawms.catalog.states import Entity, ReplicaState
from dawms.catalog.transition import transition_many
from dawms.ddm_bridge.local import LocalDDM
from dawms.scheduler import broker, refiner
from dawms.scheduler.config import SchedulerConfig
from dawms.scheduler.task import submit
from dawms.storage.paths import lfn2pfn
from factories import make_dataset

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]

SPEC = {"name": "xproc", "transformation": "true {inputs}", "input_datasets": ["xp:raw"],
        "output_dataset": "xp:out.{task_id}", "split": {"files_per_job": 1}}
HOLDER = "test-ddm"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(what, timeout: float, message: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not (got := what()):
        assert time.monotonic() < deadline, message
        time.sleep(0.05)
    return got


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[dict]:
    started: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(db_url: str, *args: str) -> subprocess.Popen[bytes]:
        env = {**os.environ, "DAWMS_DB_URL": db_url, "DAWMS_INTERVAL_S": "3600",
               "DAWMS_TRANSFER_INTERVAL_S": "3600"}
        log = tmp_path / f"{args[0]}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "dawms", *args], env=env,
                                    stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        started.append((proc, log))
        return proc

    yield {"start": start, "logs": lambda: "\n".join(
        f"--- {log.name}\n{log.read_text()}" for _, log in started)}
    for proc, _ in started:
        proc.terminate()
    for proc, _ in started:
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _assigned_jobs_waiting_on_us(db: Database, ddm: LocalDDM, tmp_path: Path) -> list[int]:
    """Three jobs assigned to SITE_B/C, each waiting for SITE_A's data; the requests'
    transfer lease is ours, so the local transfer worker leaves them alone."""
    make_dataset(db, ddm, "xp:raw", "SITE_A_DISK", 3, tmp_path)
    with db.session() as s:
        s.scalar(select(Queue).where(Queue.name == "SITE_A_PROD")).status = "offline"
        submit(s, SPEC, ddm)
    assert refiner.run_once(db, ddm)
    broker.run_once(db, ddm, SchedulerConfig())
    until = until_in_an_hour()
    with db.session() as s:
        states = dict(s.execute(select(Job.state, func.count()).group_by(Job.state)).all())
        assert states == {"assigned": 3}, states
        s.execute(update(DataRequest).values(acquired_by=HOLDER, acquired_until=until))
        # the DDM poller's safety net must not end the requests either: we hold its lease
        s.add(DaemonLock(name="ddm_poller", holder=HOLDER, acquired_until=until))
        return list(s.scalars(select(DataRequest.id).order_by(DataRequest.id)))


def until_in_an_hour() -> datetime:
    return datetime.now(UTC) + timedelta(hours=1)


def _deliver(db: Database, request_ids: list[int]) -> None:
    """What the DDM does before it calls back: the bytes at the destination, the
    replicas available."""
    src_ep, dst_ep = aliased(StorageEndpoint), aliased(StorageEndpoint)
    src, dst = aliased(Replica), aliased(Replica)
    with db.session() as s:
        rows = s.execute(
            select(File.scope, File.name, src_ep.url_prefix, dst_ep.url_prefix, dst.id)
            .join(DataRequestFile, DataRequestFile.file_id == File.id)
            .join(DataRequest, DataRequest.id == DataRequestFile.request_id)
            .join(dst, (dst.file_id == File.id) & (dst.endpoint_id == DataRequest.endpoint_id))
            .join(dst_ep, dst_ep.id == dst.endpoint_id)
            .join(src, (src.file_id == File.id) & (src.state == ReplicaState.AVAILABLE))
            .join(src_ep, src_ep.id == src.endpoint_id)
            .where(DataRequest.id.in_(request_ids))).all()
        assert rows
        for scope, name, src_prefix, dst_prefix, _ in rows:
            target = Path(lfn2pfn(dst_prefix, scope, name).removeprefix("file://"))
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(lfn2pfn(src_prefix, scope, name).removeprefix("file://"), target)
        moved = transition_many(s, Entity.REPLICA, [r[4] for r in rows], ReplicaState.AVAILABLE,
                                expected=ReplicaState.COPYING, actor=f"ddm:{HOLDER}",
                                reason="copied")
        assert len(moved) == len(rows)


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_two_process_ddm_callback_wakes_the_activator_in_the_scheduler(
        db: Database, ddm: LocalDDM, sites: list[str], tmp_path: Path, processes: dict) -> None:
    request_ids = _assigned_jobs_waiting_on_us(db, ddm, tmp_path)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    server = processes["start"](db.url, "server", "--no-scheduler", "--port", str(port))
    # pg_stat_activity is read once per transaction: watch it from an autocommit connection
    with db.engine.connect() as gate, db.engine.connect().execution_options(
            isolation_level="AUTOCOMMIT") as watch:
        # our lease, not yet committed: the scheduler's attempt to take it waits on us
        gate.execute(insert(DaemonLock).values(name="activator", holder=HOLDER,
                                               acquired_until=until_in_an_hour()))
        scheduler = processes["start"](db.url, "scheduler")
        waiter = _wait(lambda: watch.execute(text(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND "
            "wait_event_type = 'Lock' AND query LIKE '%daemon_lock%'")).scalar(), 60,
            "the scheduler's start-up activator run never tried the lease\n"
            + processes["logs"]())
        _deliver(db, request_ids)
        gate.commit()  # its attempt goes on, finds our lease alive, and skips the run
        _wait(lambda: watch.execute(text(
            "SELECT state = 'idle' FROM pg_stat_activity WHERE pid = :p"),
            {"p": waiter}).scalar() is not False,
            30, "the scheduler's start-up activator attempt did not finish")
    with db.session() as s:
        s.execute(delete(DaemonLock).where(DaemonLock.name == "activator"))
        assert set(s.scalars(select(Job.state))) == {"assigned"}, "activated before the callback"
    _wait(lambda: _ping(url), 60, "the server did not start\n" + processes["logs"]())
    assert server.poll() is None and scheduler.poll() is None, processes["logs"]()

    t0 = time.monotonic()
    with httpx.Client(base_url=url, headers=ddm_headers(db), timeout=30) as client:
        for rid in request_ids:
            r = client.post("/api/v1/ddm/event", json={
                "source": "test", "dedup_key": f"test:{rid}:done", "outcome": "done",
                "request_id": rid})
            assert r.status_code == 200 and r.json()["data"]["result"] == "applied", r.text
    acked = time.monotonic() - t0

    def activated() -> bool:
        with db.session() as s:
            return set(s.scalars(select(Job.state))) == {"activated"}

    _wait(activated, 30, "the callback did not activate the jobs (only an hourly run "
          "would now)\n" + processes["logs"]())
    took = time.monotonic() - t0
    with db.session() as s:
        actors = set(s.scalars(select(StateHistory.actor).where(
            StateHistory.entity == "job", StateHistory.to_state == "activated")))
        assert actors == {"scheduler:activator"}
        # the scheduler instance (not the test) ran the activator: it holds the lease
        holder = s.scalar(select(DaemonLock.holder).where(DaemonLock.name == "activator"))
        assert holder and holder != HOLDER and f":{scheduler.pid}:" in holder
    print(f"callbacks acknowledged in {acked * 1000:.0f} ms; all jobs activated "
          f"{took * 1000:.0f} ms after the first callback")


def ddm_headers(db: Database) -> dict[str, str]:
    """What a DDM sends with its callback: a real ``ddm`` token (auth is on)."""
    from dawms.server.tokens import issue

    return {"Authorization": f"Bearer {issue(db, role='ddm', subject=HOLDER)[0]}"}


def _ping(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
