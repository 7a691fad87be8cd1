"""The job's log tarball: what an operator reads when a job went wrong.

It packs the payload's stdout and stderr, the pilot's own log of the job and
the job description (without the lease token) into a .tgz named as the job's
log LFN, under one top-level folder, as PanDA's pilot does.

The payload has had the work dir to itself, so nothing found there is trusted:
the tarball's name must be a plain file name, it is created afresh (never written
through a link the payload left under that name), and members that are links or
not regular files are left out, so the log never carries a file of the worker
node.
"""

from __future__ import annotations

import json
import os
import stat
import tarfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from dawms.pilot.payload import STDERR_NAME, STDOUT_NAME
from dawms.storage.paths import check_component

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
    tarball = Path(workdir) / check_component(lfn, "log name")  # one component: in workdir
    if tarball.is_symlink() or tarball.is_file():
        tarball.unlink()  # whatever the payload left there; a directory makes open() fail
    fd = os.open(tarball, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name in members:
            path = workdir / name
            try:
                info = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISREG(info.st_mode):  # never a link, a fifo or a device
                tar.add(path, arcname=f"{folder}/{name}", recursive=False)
    return tarball
