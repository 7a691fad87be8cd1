"""The pilot-factory registry, the pilot's command line, and what a pilot imports.

What every backend must do (submit, status, cancel, cleanup, limits) is the
conformance suite in test_factory_conformance.py.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pilot_helpers import StubServer

from dawms.pilot.factory import PilotStatus, get_factory, pilot_argv
from dawms.pilot.factory.local import LocalFactory


def test_local_pilot_runs_the_queued_job_and_exits_when_idle(
    stub_server: StubServer, make_spec: Callable[..., dict[str, Any]], tmp_path: Path
) -> None:
    spec = make_spec()
    stub_server.jobs = [spec]
    factory = get_factory("local")
    assert isinstance(factory, LocalFactory)
    [handle] = factory.submit(stub_server.url, "Q", 1, tmp_path / "pilots",
                              idle_timeout=0.5, poll_interval=0.1)
    status = factory.wait(handle, timeout=60)
    log_text = handle.log_path.read_text() if handle.log_path else ""
    assert status is PilotStatus.DONE, log_text
    assert stub_server.states() == ["starting", "running", "finished"]
    assert f"job {spec['job_id']} attempt 1: finished" in log_text
    assert handle.pilot_id in log_text


def test_unknown_factory_is_a_clear_error() -> None:
    with pytest.raises(LookupError, match="dawms.pilot_factories"):
        get_factory("pbs-from-1995")


def test_pilot_argv_passes_only_given_options(tmp_path: Path) -> None:
    argv = pilot_argv("http://s", "Q", tmp_path, max_jobs=3, idle_timeout=0.5)
    assert argv == [sys.executable, "-m", "dawms.pilot", "--server", "http://s", "--queue", "Q",
                    "--workdir", str(tmp_path), "--max-jobs", "3", "--idle-timeout", "0.5"]


def test_the_pilot_stays_light() -> None:
    """Importing every pilot module pulls in none of the server's dependencies."""
    code = ("import sys, dawms.pilot.main, dawms.pilot.factory.local, dawms.storage.movers.file\n"
            "heavy = {'sqlalchemy', 'fastapi', 'pydantic', 'alembic', 'apscheduler', 'uvicorn'}\n"
            "ours = {m.split('.')[1] for m in sys.modules if m.startswith('dawms.')}\n"
            "catalog = sorted(m for m in sys.modules if m.startswith('dawms.catalog'))\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & heavy), sorted(ours),"
            " catalog)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd="/").stdout
    # the wire records bring the catalog's table of states (standard library), nothing more
    assert out.strip() == ("[] ['catalog', 'pilot', 'storage', 'wire'] "
                           "['dawms.catalog', 'dawms.catalog.states']")
