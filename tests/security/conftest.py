"""Fixtures for the security tests: a tree snapshot, job specs for a real pilot process.

The pilot tests' stub server (``tests/pilot/pilot_helpers.py``) is reused: it is a
real HTTP server that hands a real ``dawms-pilot`` process whatever job spec a
test queues, which is how a malicious or broken server is played here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import security_helpers  # noqa: F401 (puts tests/pilot on the path for pilot_helpers)
from fastapi.testclient import TestClient
from pilot_helpers import StubServer, adler32_hex, running_stub_server

from dawms.catalog.db import Database
from dawms.ddm_bridge.local import LocalDDM
from dawms.scheduler.config import SchedulerConfig
from dawms.server.app import create_app
from factories import make_dataset


@pytest.fixture
def stub_server() -> Iterator[StubServer]:
    with running_stub_server() as stub:
        yield stub


@pytest.fixture
def job_spec(tmp_path: Path) -> Callable[..., dict[str, Any]]:
    """A job spec with two real file:// inputs under ``tmp_path/store`` and outputs to
    ``tmp_path/dest``, both listed as the job's endpoints."""
    counter = iter(range(1, 1000))

    def make(transformation: str, input_names: tuple[str, ...] = ("raw.A._000001",
                                                                   "raw.A._000002"),
             **overrides: Any) -> dict[str, Any]:
        job_id = next(counter)
        store, dest = tmp_path / "store", tmp_path / "dest"
        store.mkdir(exist_ok=True)
        dest.mkdir(exist_ok=True)
        inputs = []
        for i, lfn in enumerate(input_names):
            data = f"input {i} of job {job_id}\n".encode()
            path = store / f"job{job_id}.{i}"
            path.write_bytes(data)
            inputs.append({"scope": "sec", "lfn": lfn, "size": len(data),
                           "adler32": adler32_hex(data), "urls": [path.as_uri()]})
        out, log = f"out.{job_id}._000001.1", f"out.{job_id}._000001.1.log.tgz"
        spec = {"job_id": job_id, "attempt": 1, "lease_token": f"lease-{job_id}", "task_id": 1,
                "job_name": f"sec.{job_id}", "transformation": transformation,
                "cores": 1, "memory_mb": 500, "walltime_s": 60, "heartbeat_s": 30,
                "inputs": inputs,
                "outputs": [{"scope": "sec", "lfn": out, "dataset": "sec:out",
                             "url": (dest / out).as_uri()}],
                "log": {"scope": "sec", "lfn": log, "dataset": "sec:out.log",
                        "url": (dest / log).as_uri()},
                "movers": {"read": ["file"], "write": ["file"]},
                "endpoint_out": "DEST",
                "endpoints": {"STORE": store.as_uri(), "DEST": dest.as_uri()}}
        spec.update(overrides)
        return spec

    return make


@pytest.fixture
def api(db: Database, ddm: LocalDDM, sites: list[str], tmp_path: Path,
        bearer: Callable[..., dict[str, str]]) -> Iterator[TestClient]:
    """The real app in-process over ``db``, with dataset sec:raw (2 files) at SITE_A.

    It calls as admin (every rule admits it): these tests are about what a name or a
    report may do once a caller is let in; who is let in is tests/auth's matter."""
    make_dataset(db, ddm, "sec:raw", "SITE_A_DISK", 2, tmp_path)
    with TestClient(create_app(db, ddm, SchedulerConfig()),
                    raise_server_exceptions=False) as client:
        client.headers.update(bearer("admin", "security"))
        yield client


