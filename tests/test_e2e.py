"""End to end: a real server process, real pilot processes over HTTP, on SQLite and PostgreSQL.

The whole data-aware flow: a task over two datasets at two sites, one of whose
queues takes no new work (``brokeroff``), so its data must be replicated before
jobs can run elsewhere; pilots stage in, run, stage out and report; every output
must be registered with the size and adler32 of the bytes on disk. Then a pilot
dies mid-job: its attempt fails on lost heartbeat, a new attempt finishes, and
the dead attempt's lease is refused with 409.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from dawms.catalog.db import Database
from dawms.catalog.models import File, Job, JobFile, Replica, StateHistory, StorageEndpoint
from dawms.client import Client
from dawms.ddm_bridge.local import LocalDDM
from dawms.pilot.factory.local import LocalFactory
from dawms.storage.checksum import url_checksum
from dawms.storage.paths import lfn2pfn
from factories import make_dataset

pytestmark = pytest.mark.e2e

PAYLOAD = ("{python} -c \"import sys,time,zlib; a=int(sys.argv[1]); "
           "time.sleep({sleep} if a == 1 else 0); "
           "d=b''.join(open(p,'rb').read() for p in sys.argv[3:]); "
           "open(sys.argv[2],'w').write(str(zlib.adler32(d)))\" {{attempt}} {{output}} {{inputs}}")


def _spec(sleep: int = 0) -> dict:
    return {"name": "e2e", "transformation": PAYLOAD.format(python=sys.executable, sleep=sleep),
            "input_datasets": ["e2e:raw.A", "e2e:raw.B"], "output_dataset": "e2e:out.{task_id}",
            "split": {"files_per_job": 2}, "retry": {"max_attempts": 3}}


def _wait_task(client: Client, task_id: int, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        task = client.task(task_id)
        if task["state"] in ("done", "finished", "failed", "broken"):
            return task
        time.sleep(0.3)
    raise AssertionError(f"task {task_id} not ended: {client.summary(task_id)}")


def _check_outputs(db: Database) -> int:
    """Every finished job's output is registered and its bytes match size + adler32."""
    with db.session() as s:
        rows = s.execute(select(JobFile, File, StorageEndpoint.url_prefix)
                         .join(Job, Job.id == JobFile.job_id)
                         .join(File, File.id == JobFile.file_id)
                         .join(Replica, Replica.file_id == File.id)
                         .join(StorageEndpoint, StorageEndpoint.id == Replica.endpoint_id)
                         .where(Job.state == "finished", JobFile.type.in_(["out", "log"]))).all()
    for jf, f, prefix in rows:
        assert (jf.size, jf.adler32) == (f.size, f.adler32)
        assert url_checksum(lfn2pfn(prefix, f.scope, f.name)) == (f.size, f.adler32)
    return sum(1 for jf, _, _ in rows if jf.type == "out")


def test_whole_flow_with_replication(db: Database, ddm: LocalDDM, server: str,
                                     tmp_path: Path, make_token) -> None:
    make_dataset(db, ddm, "e2e:raw.A", "SITE_A_DISK", 8, tmp_path, seed=1)
    make_dataset(db, ddm, "e2e:raw.B", "SITE_B_DISK", 8, tmp_path, seed=2)
    factory = LocalFactory()
    with Client(server, token=make_token("production", "prodmgr")) as client, \
            Client(server, token=make_token("factory", "f", ["SITE_A_PROD", "SITE_C_PROD"])
                   ) as as_factory:
        task_id = client.submit_task(_spec())["task_id"]
        handles = [h for q in ("SITE_A_PROD", "SITE_C_PROD") for h in factory.submit(
            server, q, 1, tmp_path / "pilots" / q, idle_timeout=5, poll_interval=0.3,
            token=as_factory.pilot_token([q])["token"])]
        task = _wait_task(client, task_id)
        summary = client.summary(task_id)
    for h in handles:
        factory.wait(h, 30)
    assert task["state"] == "done", summary
    assert summary["jobs"] == {"finished": 8}
    assert summary["files_replicated"] >= 8  # SITE_B's files had to move
    assert summary["jobs_by_site"].get("SITE_B") is None
    assert _check_outputs(db) == summary["outputs_registered"] == 8
    with db.session() as s:
        # assigned jobs were activated only after their inputs arrived
        waited = s.scalars(select(StateHistory.entity_id).where(
            StateHistory.entity == "job", StateHistory.to_state == "assigned")).all()
        assert len(waited) >= 4
        for job_id in waited:
            steps = [h.to_state for h in s.scalars(select(StateHistory).where(
                StateHistory.entity == "job", StateHistory.entity_id == job_id)
                .order_by(StateHistory.id))]
            assert steps[:6] == ["defined", "assigned", "activated", "sent", "starting",
                                 "running"]
            assert steps[-1] == "finished"
            # ...and not before each input's copy at its site was recorded available
            activated_at = s.scalar(select(StateHistory.at).where(
                StateHistory.entity == "job", StateHistory.entity_id == job_id,
                StateHistory.to_state == "activated"))
            job = s.get(Job, job_id)
            site_disk = f"{job.spec['queue'].removesuffix('_PROD')}_DISK"
            arrived = s.scalars(
                select(StateHistory.at)
                .join(Replica, Replica.id == StateHistory.entity_id)
                .join(StorageEndpoint, StorageEndpoint.id == Replica.endpoint_id)
                .join(JobFile, JobFile.file_id == Replica.file_id)
                .where(StateHistory.entity == "replica", StateHistory.to_state == "available",
                       StorageEndpoint.name == site_disk, JobFile.job_id == job_id,
                       JobFile.type == "in")).all()
            n_inputs = s.scalar(select(func.count()).select_from(JobFile).where(
                JobFile.job_id == job_id, JobFile.type == "in"))
            assert len(arrived) >= 1 and len(arrived) <= n_inputs
            assert max(arrived) <= activated_at


def test_dead_pilot_attempt_is_retried_and_fenced(db: Database, ddm: LocalDDM, server: str,
                                                  tmp_path: Path, make_token) -> None:
    make_dataset(db, ddm, "e2e:raw.A", "SITE_A_DISK", 2, tmp_path, seed=3)
    spec = {**_spec(sleep=120), "input_datasets": ["e2e:raw.A"]}
    factory = LocalFactory()
    pilot_token = make_token("pilot", "p", ["SITE_A_PROD"])
    with Client(server, token=make_token("production", "prodmgr")) as client:
        task_id = client.submit_task(spec)["task_id"]
        first = factory.submit(server, "SITE_A_PROD", 1, tmp_path / "p1", idle_timeout=30,
                               poll_interval=0.3, token=pilot_token)[0]
        deadline = time.monotonic() + 60
        while not client.jobs(task_id=task_id, state="running"):
            assert time.monotonic() < deadline, client.summary(task_id)
            time.sleep(0.2)
        with db.session() as s:
            old = s.scalar(select(Job).where(Job.task_id == task_id, Job.attempt == 1))
            old_fence = {"job_id": old.id, "attempt": 1, "lease_token": old.lease_token}
        os.killpg(int(first.id), signal.SIGKILL)  # the pilot and its payload vanish
        second = factory.submit(server, "SITE_A_PROD", 1, tmp_path / "p2", idle_timeout=20,
                                poll_interval=0.3, token=pilot_token)[0]
        task = _wait_task(client, task_id)
        jobs = client.jobs(task_id=task_id)
    factory.cancel(second)  # it would idle a while longer; the work is done
    assert task["state"] == "done"
    assert sorted((j["attempt"], j["state"]) for j in jobs) == [(1, "failed"), (2, "finished")]
    assert jobs[0]["error_category"] == "lost_heartbeat"
    # the dead attempt can never come back: its lease is refused, nothing changes
    # (with the queue's pilot token: the lease, not the token, is what fences an attempt)
    reply = httpx.post(f"{server}/api/v1/pilot/update_job",
                       json={**old_fence, "state": "finished", "outputs": []},
                       headers={"Authorization": f"Bearer {pilot_token}"})
    assert reply.status_code == 409
    assert reply.json()["success"] is False and "failed" in reply.json()["message"]
    with Client(server, token=make_token("reader")) as client:
        assert [j["state"] for j in client.jobs(task_id=task_id)] == ["failed", "finished"]
    assert _check_outputs(db) == 1


def test_kill_reaches_the_running_payload_through_the_heartbeat(
        db: Database, ddm: LocalDDM, server: str, tmp_path: Path, make_token) -> None:
    make_dataset(db, ddm, "e2e:raw.A", "SITE_A_DISK", 1, tmp_path, seed=5)
    spec = {**_spec(sleep=300), "input_datasets": ["e2e:raw.A"]}
    factory = LocalFactory()
    with Client(server, token=make_token("analyst", "ana")) as client:
        task_id = client.submit_task(spec)["task_id"]
        pilot = factory.submit(server, "SITE_A_PROD", 1, tmp_path / "p", idle_timeout=3,
                               poll_interval=0.3, kill_grace=2,
                               token=make_token("pilot", "p", ["SITE_A_PROD"]))[0]
        deadline = time.monotonic() + 60
        while not (running := client.jobs(task_id=task_id, state="running")):
            assert time.monotonic() < deadline, client.summary(task_id)
            time.sleep(0.2)
        t0 = time.monotonic()
        assert client.kill_jobs([running[0]["id"]]) == {str(running[0]["id"]): "tobekilled"}
        while client.job(running[0]["id"])["state"] != "cancelled":
            assert time.monotonic() - t0 < 30, client.job(running[0]["id"])
            time.sleep(0.2)
        killed_after = time.monotonic() - t0
        jobs = client.jobs(task_id=task_id)
    assert factory.wait(pilot, 30) == "done"  # the pilot itself carried on, then went idle
    assert [(j["attempt"], j["state"]) for j in jobs] == [(1, "cancelled")]
    assert killed_after < 15  # a heartbeat (1 s) plus the kill grace, not the 300 s sleep
