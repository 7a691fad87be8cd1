"""Fixtures for the pilot tests: the stub ``dawms.wire`` server and job specs."""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pilot_helpers import PAYLOAD_SCRIPT, StubServer, adler32_hex, running_stub_server


@pytest.fixture
def stub_server() -> Iterator[StubServer]:
    with running_stub_server() as stub:
        yield stub


@pytest.fixture
def make_spec(tmp_path: Path) -> Callable[..., dict[str, Any]]:
    """Build a ``wire.JobSpec`` dict whose inputs exist as file:// replicas under tmp_path."""
    counter = iter(range(1, 1000))
    script = tmp_path / "payload.py"
    script.write_text(PAYLOAD_SCRIPT)

    def make(n_inputs: int = 2, heartbeat_s: float = 30, walltime_s: float = 60,
             **overrides: Any) -> dict[str, Any]:
        job_id = next(counter)
        store = tmp_path / "store"
        store.mkdir(exist_ok=True)
        inputs = []
        for i in range(n_inputs):
            data = os.urandom(1000 + i * 517)
            lfn = f"raw.{job_id}._{i:06d}"
            (store / lfn).write_bytes(data)
            inputs.append({"scope": "test", "lfn": lfn, "size": len(data),
                           "adler32": adler32_hex(data), "guid": f"g{job_id}.{i}",
                           "urls": [(store / lfn).as_uri()]})
        dest = tmp_path / "dest"
        out_lfn = f"reco.{job_id}._000001"
        log_lfn = f"reco.{job_id}._000001.log.tgz"
        spec = {
            "job_id": job_id, "attempt": 1, "lease_token": f"lease-{job_id}", "task_id": 1,
            "job_name": f"test.reco.{job_id}",
            "transformation": f"{shlex.quote(sys.executable)} {script} {{inputs}} {{output}}",
            "cores": 1, "memory_mb": 1000, "walltime_s": walltime_s, "heartbeat_s": heartbeat_s,
            "inputs": inputs,
            "outputs": [{"scope": "test", "lfn": out_lfn, "dataset": "test:reco",
                         "url": (dest / "reco" / out_lfn).as_uri()}],
            "log": {"scope": "test", "lfn": log_lfn, "dataset": "test:reco.log",
                    "url": (dest / "logs" / log_lfn).as_uri()},
            "movers": {"read": ["file"], "write": ["file"]},
        }
        spec.update(overrides)
        return spec

    return make
