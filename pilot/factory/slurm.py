"""Pilots as Slurm batch jobs: ``sbatch --parsable``, ``scontrol show job``, ``scancel``.

Each pilot is one batch job whose script is ``exec python -m dawms.pilot ...`` (so
the batch step's SIGTERM on ``scancel`` reaches the pilot, which kills its payload
and reports). Its token never appears on a command line: ``sbatch`` arguments and
the job's command are visible to every user of the cluster, so the script passes
``--token-file`` (a 0600 file) and the submitting environment is stripped of any
bearer token. Every command is built one argument at a time; the queue becomes a
job name only through ``job_name`` (letters, digits, ``_.-``); script and log
paths are made here from random tags, under ``workdir``.

Only jobs this factory submitted are ever polled, cancelled or forgotten: a job id
it does not know polls ``UNKNOWN`` and is not touched. The controller forgets
ended jobs after ``MinJobAge``; a known job it no longer knows ended ``FAILED``
(lost) unless this factory cancelled it. ``pyslurm`` has no release for Slurm
22.05 (Debian 12), hence the command-line tools.
"""

from __future__ import annotations

import re
import shlex
import socket
import subprocess
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dawms.pilot.factory.base import (
    PILOT_ENDED,
    PilotFactory,
    PilotHandle,
    PilotStatus,
    SubmitError,
    check_submit,
    pilot_argv,
    pilot_environ,
    write_token_file,
)

JOB_NAME_MAX = 64
OUTPUT_MAX = 64 * 1024  # bytes of a Slurm command's output we read
_SLURM_WORD = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")  # partition, account, qos
_JOB_ID = re.compile(r"^[0-9]{1,12}$")
_STATE = re.compile(r"(?:^|\s)JobState=([A-Z_]+)")
_STATES = {
    "PENDING": PilotStatus.PENDING, "CONFIGURING": PilotStatus.PENDING,
    "REQUEUED": PilotStatus.PENDING, "REQUEUE_HOLD": PilotStatus.PENDING,
    "REQUEUE_FED": PilotStatus.PENDING, "RESV_DEL_HOLD": PilotStatus.PENDING,
    "RUNNING": PilotStatus.RUNNING, "COMPLETING": PilotStatus.RUNNING,  # still exiting
    "SUSPENDED": PilotStatus.RUNNING, "STOPPED": PilotStatus.RUNNING,
    "SIGNALING": PilotStatus.RUNNING, "STAGE_OUT": PilotStatus.RUNNING,
    "RESIZING": PilotStatus.RUNNING,
    "COMPLETED": PilotStatus.DONE,
    "CANCELLED": PilotStatus.CANCELLED,
}  # everything else (FAILED, TIMEOUT, NODE_FAIL, OUT_OF_MEMORY, BOOT_FAIL...) is FAILED
_INT_SETTINGS = {"time_limit_min": 60 * 24 * 365, "cpus_per_task": 4096, "mem_mb": 2**31 - 1}


class SlurmError(RuntimeError):
    """A Slurm command failed (the controller is down, or refused)."""


def job_name(queue: str) -> str:
    """A job name made of the queue's safe characters only."""
    return "dawms-pilot-" + re.sub(r"[^A-Za-z0-9_.-]", "_", queue)[:JOB_NAME_MAX - 12]


def sbatch_options(settings: Mapping[str, Any]) -> list[str]:
    """``sbatch`` options from a queue's backend settings, each checked; ``SubmitError``
    names the first bad one."""
    out = []
    for key, value in settings.items():
        if key in ("partition", "account", "qos"):
            if not isinstance(value, str) or not _SLURM_WORD.match(value):
                raise SubmitError(f"slurm {key} must be 1-64 of A-Z a-z 0-9 _ . -, "
                                  f"got {str(value)[:80]!r}")
            out.append(f"--{key}={value}")
        elif key in _INT_SETTINGS:
            if type(value) is not int or not 1 <= value <= _INT_SETTINGS[key]:
                raise SubmitError(f"slurm {key} must be an integer from 1 to "
                                  f"{_INT_SETTINGS[key]}, got {str(value)[:80]!r}")
            flag = {"time_limit_min": "--time", "cpus_per_task": "--cpus-per-task",
                    "mem_mb": "--mem"}[key]
            out.append(f"{flag}={value}")
        else:
            raise SubmitError(f"unknown slurm setting {str(key)[:80]!r} (partition, account, "
                              f"qos, {', '.join(_INT_SETTINGS)})")
    return out


@dataclass
class _Job:
    script: Path
    final: PilotStatus | None = None
    cancelled: bool = False


class SlurmFactory(PilotFactory):
    """Submits pilots with ``sbatch`` to the cluster of ``slurm_conf`` (default:
    ``$SLURM_CONF``)."""

    name = "slurm"
    settings_keys = frozenset({"slurm"})

    def __init__(self, slurm_conf: str | Path | None = None, command_timeout_s: float = 60,
                 ) -> None:
        self.slurm_conf = str(slurm_conf) if slurm_conf else None
        self.command_timeout_s = command_timeout_s
        self._jobs: dict[str, _Job] = {}

    # --- the Slurm commands --------------------------------------------------------------
    def _run(self, argv: list[str], env: Mapping[str, str] | None = None,
             check: bool = True) -> subprocess.CompletedProcess[str]:
        full_env = pilot_environ(env)
        if self.slurm_conf:
            full_env["SLURM_CONF"] = self.slurm_conf
        try:
            done = subprocess.run(argv, env=full_env, stdin=subprocess.DEVNULL,
                                  capture_output=True, text=True,
                                  timeout=self.command_timeout_s)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SlurmError(f"{argv[0]}: {exc}") from None
        done.stdout, done.stderr = done.stdout[:OUTPUT_MAX], done.stderr[:OUTPUT_MAX]
        if check and done.returncode != 0:
            raise SlurmError(f"{argv[0]} exited {done.returncode}: {done.stderr.strip()[:500]}")
        return done

    # --- the interface -------------------------------------------------------------------
    def submit(
        self, server_url: str, queue: str, n: int, workdir: Path, *,
        env: Mapping[str, str] | None = None, token: str | None = None,
        token_file: Path | None = None, slurm: Mapping[str, Any] | None = None, **opts: Any,
    ) -> list[PilotHandle]:
        """Submit ``n`` batch jobs. ``opts`` are ``pilot_argv`` options; ``slurm`` the
        queue's sbatch settings (partition, account, qos, time_limit_min, cpus_per_task,
        mem_mb); ``token`` is written to a 0600 file (or ``token_file`` is used); ``env``
        is added to the jobs' environment."""
        check_submit(server_url, queue, n, self.max_per_submit)
        options = sbatch_options(slurm or {})
        try:  # refuse unknown pilot options before anything is written or submitted
            pilot_argv(server_url, queue, Path(workdir), **opts)
        except TypeError as exc:
            raise SubmitError(str(exc)) from None
        workdir = Path(workdir).absolute()
        workdir.mkdir(parents=True, exist_ok=True)
        if token and token_file is None:
            token_file = write_token_file(workdir / "tokens", token)
        handles = []
        for _ in range(n):
            tag = uuid.uuid4().hex[:12]
            pilot_id = f"{socket.gethostname()}:slurm:{tag}"
            pilot_dir = workdir / f"pilot-{tag}"
            pilot_dir.mkdir()
            log_path = workdir / f"pilot-{tag}.log"
            script = workdir / f"pilot-{tag}.sh"
            argv = pilot_argv(server_url, queue, pilot_dir, pilot_id=pilot_id,
                              token_file=token_file, **opts)
            script.write_text(f"#!/bin/sh\n# dawms pilot {pilot_id}\nexec {shlex.join(argv)}\n")
            script.chmod(0o700)
            done = self._run(["sbatch", "--parsable", f"--job-name={job_name(queue)}",
                              f"--output={log_path}", f"--chdir={pilot_dir}", "--ntasks=1",
                              "--export=ALL", *options, str(script)], env=env)
            job_id = done.stdout.strip().split(";", 1)[0]
            if not _JOB_ID.match(job_id):
                raise SlurmError(f"sbatch gave no job id: {done.stdout.strip()[:200]!r}")
            self._jobs[job_id] = _Job(script)
            handles.append(PilotHandle(self.name, job_id, pilot_id, log_path))
        return handles

    def poll(self, handle: PilotHandle) -> PilotStatus:
        self._own(handle)
        job = self._jobs.get(handle.id)
        if job is None:
            return PilotStatus.UNKNOWN
        if job.final is not None:
            return job.final
        done = self._run(["scontrol", "show", "job", "-o", handle.id], check=False)
        if done.returncode != 0:
            if "Invalid job id" not in done.stderr:
                raise SlurmError(f"scontrol exited {done.returncode}: {done.stderr.strip()[:500]}")
            job.final = PilotStatus.CANCELLED if job.cancelled else PilotStatus.FAILED
            return job.final
        found = _STATE.search(done.stdout)
        status = _STATES.get(found.group(1), PilotStatus.FAILED) if found else PilotStatus.FAILED
        if status in PILOT_ENDED:
            job.final = status
        return status

    def cancel(self, handle: PilotHandle) -> None:
        self._own(handle)
        job = self._jobs.get(handle.id)
        if job is None or self.poll(handle) in PILOT_ENDED:
            return  # not ours, or ended already: nothing to stop
        job.cancelled = True
        self._run(["scancel", handle.id])  # SIGTERM to the pilot; SIGKILL after KillWait

    def cleanup(self, handle: PilotHandle) -> None:
        self._own(handle)
        job = self._jobs.get(handle.id)
        if job is None:
            return
        if self.poll(handle) not in PILOT_ENDED:
            raise ValueError(f"pilot {handle.pilot_id} (Slurm job {handle.id}) is still "
                             "running; cancel it first")
        job.script.unlink(missing_ok=True)  # the log stays
        del self._jobs[handle.id]

    def wait(self, handle: PilotHandle, timeout: float | None = None) -> PilotStatus:
        """Poll (every 0.5 s: each poll is a call to the controller) until the pilot ended."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while (status := self.poll(handle)) not in PILOT_ENDED:
            if deadline is not None and time.monotonic() >= deadline:
                break
            time.sleep(0.5)
        return status
