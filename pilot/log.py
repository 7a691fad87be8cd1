"""The job's log tarball: what an operator reads when a job went wrong.

It packs the payload's stdout and stderr, the pilot's own log of the job and
the job description (without the lease token) into a .tgz named as the job's
log LFN, under one top-level folder, as PanDA's pilot does.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from dawms.pilot.payload import STDERR_NAME, STDOUT_NAME

PILOT_LOG_NAME = "pilot.log"
JOB_SPEC_NAME = "job.json"
LOG_MEMBERS = (STDOUT_NAME, STDERR_NAME, PILOT_LOG_NAME, JOB_SPEC_NAME)


def write_job_spec(spec: dict[str, Any], workdir: Path) -> Path:
    """Save the job description for the log, leaving out the lease token."""
    path = workdir / JOB_SPEC_NAME
    public = {k: v for k, v in spec.items() if k != "lease_token"}
    path.write_text(json.dumps(public, indent=2, sort_keys=True))
    return path


def make_log_tarball(workdir: Path, lfn: str, members: Iterable[str] = LOG_MEMBERS) -> Path:
    """Write ``workdir/<lfn>`` holding those of ``members`` that exist."""
    folder = lfn.removesuffix(".tgz").removesuffix(".tar.gz") or "log"
    tarball = workdir / lfn
    with tarfile.open(tarball, "w:gz") as tar:
        for name in members:
            path = workdir / name
            if path.is_file():
                tar.add(path, arcname=f"{folder}/{name}")
    return tarball
