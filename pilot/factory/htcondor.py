"""Pilots as HTCondor jobs through the ``htcondor2`` bindings (``dawms[factory]``).

Each pilot is one vanilla-universe job (``Schedd.submit`` of an ``htcondor2.Submit``,
count 1) whose executable and arguments are the pilot's command line in
HTCondor's quoted argument syntax, one argument at a time; its environment is
given explicitly (never ``getenv``: that would hand the factory's own token to
its pilots), and its token travels as ``--token-file`` (a 0600 file), never as a
value: job ads are readable by every user of the pool. Status comes from the
queue (``Schedd.query``) and, once the job left it, from the history.

A job being removed keeps ``JobStatus`` 3 in the queue until its process is gone,
so such a pilot is still ``RUNNING`` (it may be reporting its job killed); once in
the history it is ``CANCELLED``. Only jobs this factory submitted are touched.
No HTCondor daemons can run here, so the tests drive it against a fake Schedd at
the bindings' seam (tests/pilot/fake_schedd.py).
"""

from __future__ import annotations

import re
import socket
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

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_JOB_ID = re.compile(r"^([0-9]{1,12})\.([0-9]{1,9})$")
ENV_VALUE_MAX = 16 * 1024
_INT_SETTINGS = {"request_cpus": 4096, "request_memory_mb": 2**31 - 1,
                 "max_walltime_s": 86400 * 365}
# JobStatus: 1 idle, 2 running, 3 removed, 4 completed, 5 held, 6 transferring, 7 suspended
_IN_QUEUE = {1: PilotStatus.PENDING, 2: PilotStatus.RUNNING, 3: PilotStatus.RUNNING,
             5: PilotStatus.PENDING, 6: PilotStatus.RUNNING, 7: PilotStatus.RUNNING}


def quote_args(argv: list[str]) -> str:
    """``argv`` in HTCondor's new argument syntax: each argument in single quotes
    (a quote inside doubled), the whole in double quotes (doubled inside)."""
    for a in argv:
        if any(c in a for c in "\n\r\0"):
            raise SubmitError(f"an argument with a line break or NUL: {a[:80]!r}")
    inner = " ".join("'" + a.replace("'", "''") + "'" for a in argv)
    return '"' + inner.replace('"', '""') + '"'


def quote_env(env: Mapping[str, str]) -> str:
    """``env`` in HTCondor's new environment syntax; variables it cannot carry (names
    that are no shell names, values with line breaks, huge values) are left out."""
    kept = {k: v for k, v in env.items() if _ENV_NAME.match(k) and len(v) <= ENV_VALUE_MAX
            and not any(c in v for c in "\n\r\0")}
    inner = " ".join(f"{k}='" + v.replace("'", "''") + "'" for k, v in sorted(kept.items()))
    return '"' + inner.replace('"', '""') + '"'


def submit_settings(settings: Mapping[str, Any]) -> dict[str, str]:
    """Submit-description lines from a queue's ``htcondor`` settings, each checked."""
    out = {}
    for key, value in settings.items():
        if key not in _INT_SETTINGS:
            raise SubmitError(f"unknown htcondor setting {str(key)[:80]!r} "
                              f"({', '.join(_INT_SETTINGS)})")
        if type(value) is not int or not 1 <= value <= _INT_SETTINGS[key]:
            raise SubmitError(f"htcondor {key} must be an integer from 1 to "
                              f"{_INT_SETTINGS[key]}, got {str(value)[:80]!r}")
        if key == "max_walltime_s":
            out["periodic_remove"] = f"JobStatus == 2 && time() - EnteredCurrentStatus > {value}"
        else:
            out[key.removesuffix("_mb")] = str(value)
    return out


@dataclass
class _Job:
    final: PilotStatus | None = None


class HTCondorFactory(PilotFactory):
    """Submits pilots to ``schedd`` (default: the pool's own ``htcondor2.Schedd()``)."""

    name = "htcondor"
    settings_keys = frozenset({"htcondor"})

    def __init__(self, schedd: Any = None) -> None:
        self._schedd = schedd
        self._jobs: dict[str, _Job] = {}

    @property
    def schedd(self) -> Any:
        if self._schedd is None:
            import htcondor2

            self._schedd = htcondor2.Schedd()
        return self._schedd

    def submit(
        self, server_url: str, queue: str, n: int, workdir: Path, *,
        env: Mapping[str, str] | None = None, token: str | None = None,
        token_file: Path | None = None, htcondor: Mapping[str, Any] | None = None,
        **opts: Any,
    ) -> list[PilotHandle]:
        """Submit ``n`` jobs; ``htcondor`` settings: request_cpus, request_memory_mb,
        max_walltime_s. The rest as the Slurm backend."""
        import htcondor2

        check_submit(server_url, queue, n, self.max_per_submit)
        extra = submit_settings(htcondor or {})
        try:
            pilot_argv(server_url, queue, Path(workdir), **opts)
        except TypeError as exc:
            raise SubmitError(str(exc)) from None
        workdir = Path(workdir).absolute()
        workdir.mkdir(parents=True, exist_ok=True)
        if token and token_file is None:
            token_file = write_token_file(workdir / "tokens", token)
        environment = quote_env(pilot_environ(env))
        handles = []
        for _ in range(n):
            tag = uuid.uuid4().hex[:12]
            pilot_id = f"{socket.gethostname()}:htcondor:{tag}"
            pilot_dir = workdir / f"pilot-{tag}"
            pilot_dir.mkdir()
            log_path = workdir / f"pilot-{tag}.log"
            argv = pilot_argv(server_url, queue, pilot_dir, pilot_id=pilot_id,
                              token_file=token_file, **opts)
            description = htcondor2.Submit({
                "universe": "vanilla", "executable": argv[0], "arguments": quote_args(argv[1:]),
                "initialdir": str(pilot_dir), "output": str(log_path),
                "error": str(log_path), "environment": environment,
                "transfer_executable": "false", "should_transfer_files": "NO",
                "+DawmsPilotId": '"' + pilot_id + '"', **extra})
            result = self.schedd.submit(description, count=1)
            job_id = f"{int(result.cluster())}.0"
            self._jobs[job_id] = _Job()
            handles.append(PilotHandle(self.name, job_id, pilot_id, log_path))
        return handles

    def _constraint(self, job_id: str) -> str:
        found = _JOB_ID.match(job_id)
        if not found:
            raise ValueError(f"not an HTCondor job id: {job_id[:40]!r}")
        return f"ClusterId == {int(found.group(1))} && ProcId == {int(found.group(2))}"

    def poll(self, handle: PilotHandle) -> PilotStatus:
        self._own(handle)
        job = self._jobs.get(handle.id)
        if job is None:
            return PilotStatus.UNKNOWN
        if job.final is not None:
            return job.final
        where = self._constraint(handle.id)
        ads = self.schedd.query(constraint=where, projection=["JobStatus"])
        if ads:
            return _IN_QUEUE.get(int(ads[0]["JobStatus"]), PilotStatus.RUNNING)
        past = self.schedd.history(constraint=where,
                                   projection=["JobStatus", "ExitCode", "ExitBySignal"], match=1)
        if not past:
            job.final = PilotStatus.FAILED  # neither queued nor in the history: lost
        elif int(past[0]["JobStatus"]) == 3:
            job.final = PilotStatus.CANCELLED
        else:
            ad = past[0]
            ok = not ad.get("ExitBySignal", False) and int(ad.get("ExitCode", 1)) == 0
            job.final = PilotStatus.DONE if ok else PilotStatus.FAILED
        return job.final

    def cancel(self, handle: PilotHandle) -> None:
        self._own(handle)
        if handle.id not in self._jobs or self.poll(handle) in PILOT_ENDED:
            return
        import htcondor2

        self.schedd.act(htcondor2.JobAction.Remove, [handle.id], reason="cancelled by dawms")

    def cleanup(self, handle: PilotHandle) -> None:
        self._own(handle)
        if handle.id not in self._jobs:
            return
        if self.poll(handle) not in PILOT_ENDED:
            raise ValueError(f"pilot {handle.pilot_id} (HTCondor job {handle.id}) is still "
                             "running; cancel it first")
        del self._jobs[handle.id]
