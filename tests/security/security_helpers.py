"""Helpers for the security tests: a tree snapshot, running a real pilot process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "pilot"))

from fastapi.testclient import TestClient  # noqa: E402
from pilot_helpers import StubServer  # noqa: E402

from dawms.catalog.db import Database  # noqa: E402
from dawms.ddm_bridge.local import LocalDDM  # noqa: E402
from dawms.scheduler.runner import Scheduler  # noqa: E402


def tree(root: Path, *skip: Path) -> dict[str, bytes]:
    """Every file and link under ``root`` (outside the ``skip`` folders) -> its bytes."""
    out = {}
    skipped = [str(p) for p in skip]
    for dirpath, dirnames, filenames in os.walk(root):
        if any(dirpath == s or dirpath.startswith(s + os.sep) for s in skipped):
            dirnames[:] = []
            continue
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            path = os.path.join(dirpath, name)
            out[path] = (b"link:" + os.readlink(path).encode() if os.path.islink(path)
                         else Path(path).read_bytes())
    return out


def run_pilot(stub: StubServer, workdir: Path, *, timeout: float = 120) -> str:
    """Run a real ``dawms-pilot`` process for one job; its stderr."""
    proc = subprocess.run(
        [sys.executable, "-m", "dawms.pilot", "--server", stub.url, "--queue", "Q",
         "--workdir", str(workdir), "--max-jobs", "1", "--idle-timeout", "5",
         "--poll-interval", "0.1", "--kill-grace", "1"],
        capture_output=True, text=True, timeout=timeout, cwd=workdir.parent)
    return proc.stderr


def final_report(stub: StubServer) -> dict[str, Any]:
    updates = stub.updates()
    assert updates, "the pilot reported nothing"
    return updates[-1]


SPEC = {"name": "sec", "transformation": "true {inputs} {output}",
        "input_datasets": ["sec:raw"], "output_dataset": "sec:out.{task_id}",
        "split": {"files_per_job": 1}}


def sent_job(db: Database, ddm: LocalDDM, api: TestClient) -> dict:
    """Submit SPEC, run the daemons once, and take one job of SITE_A_PROD as a pilot."""
    assert api.post("/api/v1/task/submit", json=SPEC).status_code == 200
    Scheduler(db, ddm).run_all_once()
    reply = api.post("/api/v1/pilot/acquire_jobs", json={"queue": "SITE_A_PROD", "pilot_id": "t"})
    return reply.json()["data"]["jobs"][0]
