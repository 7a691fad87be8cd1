"""``dawms db check`` passes on a healthy catalog and names each broken invariant on a
damaged copy (rows changed behind dawms' back, as a bad restore would leave them)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from ops_helpers import run_pilot_once, task_spec
from sqlalchemy import delete, select, update

from dawms.catalog.db import Database
from dawms.catalog.models import Job, JobFile, Replica
from dawms.cli import main
from dawms.ddm_bridge.local import LocalDDM
from dawms.scheduler.runner import Scheduler
from factories import claim, make_dataset

pytestmark = pytest.mark.ops


def _check(db: Database, monkeypatch: pytest.MonkeyPatch,
           capsys: pytest.CaptureFixture[str]) -> tuple[int, dict]:
    monkeypatch.setenv("DAWMS_DB_URL", db.url)
    code = main(["db", "check", "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_db_check_passes_healthy_and_names_what_is_broken(
        db: Database, ddm: LocalDDM, api: TestClient, world: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    make_dataset(db, ddm, "ops:raw.K", "SITE_A_DISK", 3, tmp_path, seed=11)
    assert api.post("/api/v1/task/submit", json=task_spec("ops:raw.K")).status_code == 200
    Scheduler(db, ddm).run_all_once()
    result = run_pilot_once(api, tmp_path / "work")  # one finished, with outputs
    assert result is not None
    held = claim(db, datetime.now(UTC))  # the other two held by a pilot (sent)
    assert len(held) == 2
    code, report = _check(db, monkeypatch, capsys)
    assert code == 0 and all(v["ok"] for v in report.values()), report

    with db.session() as s:
        finished = s.scalar(select(Job).where(Job.state == "finished"))
        out_file = s.scalar(select(JobFile.file_id).where(JobFile.job_id == finished.id,
                                                          JobFile.type == "out"))
        s.execute(delete(Replica).where(Replica.file_id == out_file))
        sent, other = sorted(held)
        s.execute(update(Job).where(Job.id == sent).values(lease_token=None))
        # a finished attempt back to life beside another live one of the same piece
        s.execute(update(Job).where(Job.id == other).values(job_index=finished.job_index))
        s.execute(update(Job).where(Job.id == finished.id).values(state="activated"))
    code, report = _check(db, monkeypatch, capsys)
    assert code == 1
    assert {k: v["ok"] for k, v in report.items()} == {
        "one_live_attempt": False, "running_has_lease": False, "output_has_replica": False}
    assert report["running_has_lease"]["examples"] == [f"job {sent} (sent)"]
    assert report["one_live_attempt"]["count"] == 1
    assert f"job {finished.id} output" in report["output_has_replica"]["examples"][0]
    monkeypatch.setenv("DAWMS_DB_URL", db.url)
    assert main(["db", "check"]) == 1
    assert "BROKEN: running_has_lease" in capsys.readouterr().out
