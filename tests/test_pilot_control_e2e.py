"""Pilot control end to end: a real `dawms server` process, a real `dawms-pilot`, real
payload processes, on SQLite and PostgreSQL.

The heartbeat is PanDA's 30 minutes here, so nothing but the command poll can carry
a kill: `dawms job kill` must end the payload within 60 s and register no output.
Then the server is stopped while the payload runs and started again: the payload
runs on, the final report is re-sent until the server is back, the job finishes.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from dawms.catalog.db import Database
from dawms.catalog.models import Job, JobFile, Replica
from dawms.catalog.site_config import sync, validate
from dawms.client import Client, DawmsError
from dawms.ddm_bridge.local import LocalDDM
from factories import make_dataset, site_config

pytestmark = [pytest.mark.pilot, pytest.mark.e2e]

# writes its pid, sleeps, then writes its output
PAYLOAD = ("{python} -c \"import os,sys,time; open('payload.pid','w').write(str(os.getpid())); "
           "time.sleep({sleep}); open(sys.argv[1],'w').write('done')\" {{output}} {{inputs}}")


class ServerProcess:
    """A `dawms server` on a fixed port that a test can stop and start again."""

    def __init__(self, db: Database, log: Path, env: dict[str, str]) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "DAWMS_DB_URL": db.url, "DAWMS_AUTH": "on", **env}
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "dawms", "server", "--port", str(self.port)],
                env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while True:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                httpx.get(f"{self.url}/readyz", timeout=1).raise_for_status()
                return
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)
        self.proc = None


@pytest.fixture
def server(db: Database, tmp_path: Path) -> Iterator[ServerProcess]:
    with db.session() as s:
        sync(s, validate(site_config(tmp_path / "storage", ["SITE_A", "SITE_B"])),
             actor="test", source="pilot-control")
    proc = ServerProcess(db, tmp_path / "server.log", {
        "DAWMS_HEARTBEAT_S": "1800", "DAWMS_COMMAND_POLL_S": "2", "DAWMS_INTERVAL_S": "1",
        "DAWMS_TRANSFER_INTERVAL_S": "0.5"})
    proc.start()
    yield proc
    proc.stop()


def _pilot(server: ServerProcess, token: str, tmp_path: Path) -> subprocess.Popen[bytes]:
    log = open(tmp_path / "pilot.log", "wb")  # noqa: SIM115 (the child holds it)
    env = {**os.environ, "DAWMS_TOKEN": token}
    proc = subprocess.Popen(
        [sys.executable, "-m", "dawms.pilot", "--server", server.url, "--queue", "SITE_A_PROD",
         "--workdir", str(tmp_path / "pilot"), "--max-jobs", "1", "--idle-timeout", "60",
         "--poll-interval", "0.3", "--kill-grace", "3"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    return proc


def _until(what: Callable[[], object], timeout: float, message: str) -> object:
    """Poll ``what`` until it is true; a reset keep-alive connection just asks again."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = what()
        except DawmsError as exc:
            if exc.status:  # the server answered with an error: that is a failure
                raise
            value = None
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(message)


def _payload_pid(tmp_path: Path) -> int | None:
    found = list((tmp_path / "pilot").glob("*/payload.pid"))
    text = found[0].read_text() if found else ""
    return int(text) if text else None


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _outputs_registered(db: Database, job_id: int) -> int:
    with db.session() as s:
        return s.scalar(select(func.count()).select_from(Replica)
                        .join(JobFile, JobFile.file_id == Replica.file_id)
                        .where(JobFile.job_id == job_id, JobFile.type == "out")) or 0


def _submit(db: Database, ddm: LocalDDM, tmp_path: Path, client: Client, sleep: int) -> int:
    make_dataset(db, ddm, "pc:raw", "SITE_A_DISK", 1, tmp_path)
    return client.submit_task({
        "name": "pc", "transformation": PAYLOAD.format(python=sys.executable, sleep=sleep),
        "input_datasets": ["pc:raw"], "output_dataset": "pc:out.{task_id}",
        "split": {"files_per_job": 1}})["task_id"]


def test_dawms_job_kill_ends_a_running_payload_within_a_minute_and_registers_nothing(
        db: Database, ddm: LocalDDM, server: ServerProcess, tmp_path: Path,
        make_token: Callable[..., str]) -> None:
    manager = make_token("production", "prodmgr")
    with Client(server.url, token=manager) as client:
        task_id = _submit(db, ddm, tmp_path, client, sleep=600)
        pilot = _pilot(server, make_token("pilot", "p", ["SITE_A_PROD"]), tmp_path)
        try:
            _until(lambda: client.jobs(task_id=task_id, state="running"), 90,
                   "the job never ran")
            pid = _until(lambda: _payload_pid(tmp_path), 30, "the payload never started")
            job_id = client.jobs(task_id=task_id)[0]["id"]
            kill = subprocess.run(
                [sys.executable, "-m", "dawms", "job", "kill", str(job_id)], check=False,
                env={**os.environ, "DAWMS_SERVER": server.url, "DAWMS_TOKEN": manager},
                capture_output=True, text=True, timeout=60)
            assert kill.returncode == 0, kill.stdout + kill.stderr
            killed = time.monotonic()
            _until(lambda: not _alive(int(pid)), 60, "the payload outlived its kill by 60 s")
            took = time.monotonic() - killed
            _until(lambda: client.job(job_id)["state"] == "cancelled", 30, "job not cancelled")
            assert pilot.wait(60) == 0
        finally:
            if pilot.poll() is None:
                os.killpg(pilot.pid, signal.SIGKILL)
    print(f"dawms job kill -> payload gone in {took:.1f} s")
    assert took < 60
    assert _outputs_registered(db, job_id) == 0
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Job).where(Job.retry_of == job_id)) == 0
    pilot_log = (tmp_path / "pilot.log").read_text()
    assert "server command for job" in pilot_log and "commands" in pilot_log


def test_the_payload_rides_out_a_server_outage_and_its_final_report_gets_through(
        db: Database, ddm: LocalDDM, server: ServerProcess, tmp_path: Path,
        make_token: Callable[..., str]) -> None:
    manager = make_token("production", "prodmgr")
    with Client(server.url, token=manager) as client:
        task_id = _submit(db, ddm, tmp_path, client, sleep=4)
        pilot = _pilot(server, make_token("pilot", "p", ["SITE_A_PROD"]), tmp_path)
        try:
            _until(lambda: client.jobs(task_id=task_id, state="running"), 90,
                   "the job never ran")
            job_id = client.jobs(task_id=task_id)[0]["id"]
            pid = _until(lambda: _payload_pid(tmp_path), 30, "the payload never started")
            server.stop()
            log = tmp_path / "pilot.log"
            # the payload ends while the server is down, and its report waits for it
            _until(lambda: not _alive(int(pid)), 30, "the payload did not end")
            _until(lambda: "update_job failed" in log.read_text(), 60,
                   "the final report was never tried during the outage")
            assert pilot.poll() is None  # the pilot waits: it did not give up or exit
            server.start()
            assert pilot.wait(120) == 0
        finally:
            if pilot.poll() is None:
                os.killpg(pilot.pid, signal.SIGKILL)
        job = client.job(job_id)
    assert job["state"] == "finished", job
    assert job["attempt"] == 1  # the same attempt finished; nothing was retried
    assert _outputs_registered(db, job_id) == 1
