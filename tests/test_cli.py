"""The `dawms` command as a user runs it: site sync, data upload, task and job views."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from dawms.catalog.db import Database
from dawms.catalog.models import ConfigChange, Queue
from dawms.cli import main

SITES = """
[[site]]
name = "X"

[[endpoint]]
name = "X_DISK"
site = "X"
url = "file://{root}/x"

[[queue]]
name = "X_PROD"
site = "X"
cores = {cores}
read_endpoints = ["X_DISK"]
write_endpoint = "X_DISK"
"""


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_sites_sync_shows_the_diff_and_dry_run_changes_nothing(
        db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DAWMS_DB_URL", db.url)
    f = tmp_path / "sites.toml"
    f.write_text(SITES.format(root=tmp_path, cores=4))
    code, out, _ = _run(capsys, "sites", "sync", str(f), "--dry-run")
    assert code == 0 and "+ queue X_PROD" in out and "would apply 3 change(s)" in out
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Queue)) == 0
    code, out, _ = _run(capsys, "sites", "sync", str(f))
    assert code == 0 and "applied 3 change(s)" in out
    f.write_text(SITES.format(root=tmp_path, cores=8))
    code, out, _ = _run(capsys, "sites", "sync", str(f), "--json")
    assert json.loads(out) == {"applied": True,
                               "changes": ["~ queue X_PROD (cores: 4 -> 8)"]}
    with db.session() as s:
        assert s.scalar(select(Queue.cores)) == 8
        assert s.scalar(select(func.count()).select_from(ConfigChange)) == 2
    f.write_text(SITES.format(root=tmp_path, cores=0).replace('"X_DISK"]', '"NOPE"]'))
    code, _, err = _run(capsys, "sites", "sync", str(f))
    assert code == 2 and "cores must be positive" in err and "unknown endpoint 'NOPE'" in err
    with db.session() as s:
        assert s.scalar(select(Queue.cores)) == 8


def test_task_and_job_commands_against_a_real_server(
        db: Database, server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DAWMS_DB_URL", db.url)
    files = []
    for i in range(4):
        p = tmp_path / f"raw._{i:06d}"
        p.write_bytes(bytes([i]) * 1000)
        files.append(str(p))
    code, out, _ = _run(capsys, "data", "upload", "cli:raw", *files, "--endpoint", "SITE_A_DISK")
    assert code == 0 and "4 files in cli:raw at SITE_A_DISK" in out
    task = tmp_path / "task.toml"
    task.write_text(f'''name = "cli"
transformation = "{sys.executable} -c pass {{inputs}}"
input_datasets = ["cli:raw"]
output_dataset = "cli:out.{{task_id}}"
[split]
files_per_job = 2
''')
    code, out, _ = _run(capsys, "--server", server, "task", "submit", str(task), "--json")
    assert code == 0
    task_id = json.loads(out)["task_id"]
    deadline = time.monotonic() + 30
    while True:
        code, out, _ = _run(capsys, "--server", server, "job", "list", "--task", str(task_id),
                            "--json")
        jobs = json.loads(out)
        if jobs and all(j["state"] == "activated" for j in jobs):
            break
        assert time.monotonic() < deadline, jobs
        time.sleep(0.2)
    assert len(jobs) == 2 and {j["queue"] for j in jobs} == {"SITE_A_PROD"}
    code, out, _ = _run(capsys, "--server", server, "job", "show", str(jobs[0]["id"]), "--json")
    shown = json.loads(out)
    assert [h["to"] for h in shown["history"]] == ["defined", "activated"]
    assert [f["type"] for f in shown["files"]] == ["in", "in", "out", "log"]
    code, out, _ = _run(capsys, "--server", server, "task", "list")
    assert code == 0 and "cli" in out and "activated:2" in out
    code, out, _ = _run(capsys, "--server", server, "task", "show", str(task_id), "--json")
    assert json.loads(out)["state"] == "ready"
    bad = tmp_path / "bad.toml"
    bad.write_text(task.read_text().replace("cli:raw", "cli:nothing"))
    code, _, err = _run(capsys, "--server", server, "task", "submit", str(bad))
    assert code == 1 and "cli:nothing is not known" in err
    code, _, err = _run(capsys, "--server", "http://127.0.0.1:9", "task", "list")
    assert code == 1 and "cannot reach the dawms server" in err
