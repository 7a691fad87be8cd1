"""A small real world for the monitor tests: a task whose jobs went through the real code.

Data uploaded through the local DDM, the task submitted, refined, brokered and
activated by the scheduler's daemons, jobs claimed and reported as pilots do
(``scheduler.report.pilot_update``): one finished with metrics, one failed with a
diagnostic holding ``<script>`` and a real log tarball (``pilot.log``) whose
payload output holds one too, one running, the rest activated. Names carry markup
as well, so every page has something to escape.
"""

from __future__ import annotations

import tarfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from dawms.catalog.db import Database
from dawms.catalog.models import Job, Queue
from dawms.catalog.transition import claim_jobs
from dawms.ddm_bridge.local import LocalDDM, transfer
from dawms.pilot.log import make_log_tarball
from dawms.scheduler import activator, broker, refiner
from dawms.scheduler.config import SchedulerConfig
from dawms.scheduler.task import submit
from dawms.storage.checksum import file_adler32
from factories import make_dataset, report, write_outputs

XSS = "<script>window.__pwned = 1</script>"
TASK_NAME = "mon<b>task</b>"


@dataclass
class World:
    task_id: int
    finished: int
    failed: int
    running: int
    jobs: list[int]


def build(db: Database, ddm: LocalDDM, tmp: Path, n_files: int = 8) -> World:
    make_dataset(db, ddm, "t:raw.A", "SITE_A_DISK", n_files, tmp)
    cfg = SchedulerConfig()
    spec = {"name": TASK_NAME, "transformation": "true {inputs}", "input_datasets": ["t:raw.A"],
            "output_dataset": "t:out.{task_id}", "split": {"files_per_job": 2}}
    with db.session() as s:
        task_id = submit(s, spec, ddm).id
    now = datetime.now(UTC) - timedelta(minutes=10)  # pilots report from here on
    before = now - timedelta(minutes=2)  # the jobs were made and activated then
    refiner.run_once(db, ddm, before)
    broker.run_once(db, ddm, cfg, before)
    transfer.run_once(db, before)
    activator.run_once(db, ddm, cfg, before)
    claimed = []
    with db.session() as s:
        for qid in s.scalars(select(Queue.id).order_by(Queue.id)):
            claimed += claim_jobs(s, qid, 100, "pilot-<i>1</i>", now=now)
    assert len(claimed) >= 3, claimed
    claimed.sort()
    (j1, a1, t1, spec1), (j2, a2, t2, spec2), (j3, a3, t3, _) = claimed[:3]
    metrics = {"cpu_s": 40.0, "wall_s": 50.0, "max_rss_kb": 123456.0, "bytes_in": 4096.0}
    report(db, ddm, {"job_id": j1, "attempt": a1, "lease_token": t1}, "running",
           now + timedelta(seconds=30))
    report(db, ddm, {"job_id": j1, "attempt": a1, "lease_token": t1}, "finished",
           now + timedelta(seconds=90), exit_code=0, metrics=metrics,
           outputs=write_outputs(spec1))
    # the failed one: a real log tarball at its log URL, a hostile diagnostic
    work = tmp / f"work{j2}"
    work.mkdir()
    (work / "payload.stdout").write_text("line 1\n" * 50 + f"payload said {XSS}\nthe end\n")
    (work / "payload.stderr").write_text("Traceback: boom\n")
    (work / "pilot.log").write_text("pilot: staged in 2 files\n")
    tarball = make_log_tarball(work, spec2["log"]["lfn"])
    dest = Path(spec2["log"]["url"].removeprefix("file://"))
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(tarball.read_bytes())
    with tarfile.open(dest) as tar:  # the tarball is real and holds the payload's output
        assert any(m.name.endswith("payload.stdout") for m in tar.getmembers())
    size, adler = file_adler32(dest)
    log_entry = {"lfn": spec2["log"]["lfn"], "size": size, "adler32": adler}
    report(db, ddm, {"job_id": j2, "attempt": a2, "lease_token": t2}, "running",
           now + timedelta(seconds=20))
    report(db, ddm, {"job_id": j2, "attempt": a2, "lease_token": t2}, "failed",
           now + timedelta(seconds=60), exit_code=3, error_category="payload",
           error_diag=f"payload exited 3: {XSS}", outputs=[log_entry],
           metrics={"cpu_s": 5.0, "wall_s": 10.0})
    report(db, ddm, {"job_id": j3, "attempt": a3, "lease_token": t3}, "running",
           now + timedelta(seconds=40))
    with db.session() as s:
        jobs = list(s.scalars(select(Job.id).where(Job.task_id == task_id).order_by(Job.id)))
    return World(task_id, j1, j2, j3, jobs)
