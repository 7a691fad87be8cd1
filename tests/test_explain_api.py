"""Explain and dry run through a real `dawms server` and the `dawms` command.

The server runs its own scheduler; the scenario (a task whose data must move to
a brokeroff... queue) is explained over HTTP, as JSON and as text, and a dry run
through the CLI prints the plan and leaves the catalog as it was.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from dawms.catalog.db import Database
from dawms.catalog.models import Job, Task
from dawms.cli import main
from dawms.ddm_bridge.local import LocalDDM
from factories import make_dataset

pytestmark = [pytest.mark.explain, pytest.mark.e2e]
SPEC = {"name": "x", "transformation": "true {inputs}", "input_datasets": ["t:raw"],
        "output_dataset": "t:x.{task_id}", "split": {"files_per_job": 2},
        "resources": {"memory_mb": 64000}}


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_explain_and_dry_run_over_http_and_the_cli(
        db: Database, server: str, make_token: Callable[..., str], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    make_dataset(db, LocalDDM(), "t:raw", "SITE_A_DISK", 4, tmp_path)
    token = make_token("production", "prod")
    f = tmp_path / "task.json"
    f.write_text(json.dumps(SPEC))
    base = ("--server", server, "--token", token)
    code, out, _ = _run(capsys, *base, "task", "submit", "--dry-run", str(f), "--json")
    plan = json.loads(out)
    assert code == 0 and plan["jobs_total"] == 2 and plan["unplaced_jobs"] == 2
    assert plan["queues"]["SITE_A_PROD"] == "needs memory_mb=64000, queue has 2000"
    code, out, _ = _run(capsys, *base, "task", "submit", "--dry-run", str(f))
    assert code == 0 and "would create 2 jobs from 4 input files" in out
    assert "nothing was written" in out
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Task)) == 0
    code, out, _ = _run(capsys, *base, "task", "submit", str(f), "--json")
    task_id = json.loads(out)["task_id"]
    deadline = time.monotonic() + 60
    while True:  # the server's scheduler splits and brokers it: nothing fits
        with db.session() as s:
            states = set(s.scalars(select(Job.state).where(Job.task_id == task_id)))
        if states == {"waiting"}:
            break
        assert time.monotonic() < deadline, states
        time.sleep(0.2)
    code, out, err = _run(capsys, *base, "explain", "task", str(task_id), "--json")
    assert code == 0, err
    data = json.loads(out)
    assert code == 0 and data["blockers"][0]["jobs"] == 2
    assert data["blockers"][0]["layer"] == "broker"
    assert "SITE_B_PROD: queue is brokeroff" in data["blockers"][0]["example"]
    with db.session() as s:
        job_id = s.scalar(select(Job.id).where(Job.task_id == task_id).limit(1))
    code, out, _ = _run(capsys, *base, "explain", "job", str(job_id))
    assert code == 0 and f"job {job_id} (task {task_id}, attempt 1): waiting" in out
    assert "needs memory_mb=64000, queue has 2000" in out
    # an unknown job is a 404 in the envelope, and the CLI says so without a traceback
    r = httpx.get(f"{server}/api/v1/job/999999/explain",
                  headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 404 and r.json()["message"] == "no job 999999"
    code, _, err = _run(capsys, *base, "explain", "job", "999999")
    assert code == 1 and "no job 999999" in err and "Traceback" not in err
