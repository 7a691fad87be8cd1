"""Run a job's payload: the transformation, as a subprocess, under limits.

The command template is split into argv first and its placeholders
(``{inputs}``, ``{output}``, ``{outputs}``, ``{job_id}``, ``{attempt}``) are
then replaced per argument (``wire/command.py``); the argv runs without a
shell, in the job's work dir, in its own session so the whole process tree can
be killed: at the walltime limit, on a server
command, or when the pilot itself is told to stop. stdout and stderr go to
files in the work dir for the log tarball. On Linux the payload also gets
SIGKILL if the pilot dies abruptly (``PR_SET_PDEATHSIG``), so a killed pilot
leaves no payload behind.

While it runs the process tree is sampled every ``sample_every_s`` like prmon
(``pilot/monitor.py``: max RSS and PSS, cpu user+sys, process count); at the
end ``wait4`` adds what the reaped payload used. Three limits end it, each with
its own error category: the walltime (``walltime``), the job's memory over its
``memory_mb`` (``memory``: PSS where the kernel has it, else RSS, as PanDA's
pilot checks maxPSS), and stdout or stderr growing past ``output_limit_bytes``
(``payload``: a runaway log must not fill the work dir).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from dawms.pilot.monitor import TreeMonitor, file_size
from dawms.wire.command import TemplateError, build_argv

log = logging.getLogger(__name__)

STDOUT_NAME = "payload.stdout"
STDERR_NAME = "payload.stderr"
OUTPUT_LIMIT_BYTES = 256 * 1024 * 1024  # stdout and stderr each (PanDA's pilot: a few GB)

# why the pilot ended a payload: the error category the job reports
KILL_WALLTIME = "walltime"
KILL_MEMORY = "memory"
KILL_OUTPUT = "payload"


_PR_SET_PDEATHSIG = 1


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_prctl = _load_prctl()  # loaded here: nothing may be loaded between fork and exec


def _die_with_parent(parent_pid: int) -> Callable[[], None] | None:
    """A preexec_fn that has the kernel SIGKILL the payload when the pilot dies."""
    if _prctl is None:
        return None
    prctl = _prctl

    def arm() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent_pid:  # the pilot died before the line above
            os._exit(137)

    return arm


class PayloadError(Exception):
    """The payload could not be started (bad template, missing executable)."""


def build_command(
    template: str,
    *,
    inputs: Sequence[str],
    outputs: Sequence[str],
    job_id: int | str,
    attempt: int | str,
) -> list[str]:
    """The payload's argv: ``template`` split first, placeholders replaced per argument."""
    try:
        return build_argv(template, inputs=inputs, outputs=outputs, job_id=job_id,
                          attempt=attempt)
    except TemplateError as exc:
        raise PayloadError(str(exc)) from None


@dataclass(frozen=True)
class PayloadResult:
    """How the payload ended. ``exit_code`` is negative for a signal (as subprocess)."""

    exit_code: int
    wall_s: float
    cpu_s: float
    max_rss_kb: int
    timed_out: bool
    kill_reason: str | None
    max_pss_kb: int = 0
    max_procs: int = 0
    samples: int = 0
    kill_category: str | None = None  # walltime | memory | payload when the pilot's limit hit

    def metrics(self) -> dict[str, float | int]:
        return {"cpu_s": round(self.cpu_s, 3), "wall_s": round(self.wall_s, 3),
                "max_rss_kb": self.max_rss_kb, "max_pss_kb": self.max_pss_kb,
                "max_procs": self.max_procs, "monitor_samples": self.samples}


class Payload:
    """One payload process; ``kill`` may be called from any thread."""

    def __init__(
        self,
        argv: Sequence[str],
        workdir: Path,
        *,
        walltime_s: float | None = None,
        env: Mapping[str, str] | None = None,
        kill_grace_s: float = 10.0,
        sample_every_s: float = 2.0,
        memory_limit_mb: float | None = None,
        output_limit_bytes: int = OUTPUT_LIMIT_BYTES,
    ) -> None:
        self.argv = list(argv)
        self.workdir = Path(workdir)
        self.walltime_s = walltime_s or None
        self.env = dict(os.environ if env is None else env)
        self.kill_grace_s = kill_grace_s
        self.sample_every_s = sample_every_s  # how often the tree is read for live metrics
        self.memory_limit_mb = memory_limit_mb or None
        self.output_limit_bytes = output_limit_bytes
        self._proc: subprocess.Popen[bytes] | None = None
        self._started = 0.0
        self._lock = threading.RLock()  # kill() may run in a signal handler
        self._kill_reason: str | None = None
        self._kill_category: str | None = None
        self._killed_at: float | None = None
        self._monitor: TreeMonitor | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.workdir.is_symlink():
            raise PayloadError(f"the work dir {self.workdir} is a symbolic link")
        with _open_new(self.workdir / STDOUT_NAME) as out, \
                _open_new(self.workdir / STDERR_NAME) as err:
            try:
                self._proc = subprocess.Popen(
                    self.argv, cwd=self.workdir, env=self.env, stdin=subprocess.DEVNULL,
                    stdout=out, stderr=err, start_new_session=True,
                    preexec_fn=_die_with_parent(os.getpid()))
            except OSError as exc:
                raise PayloadError(f"cannot start {self.argv[0]!r}: {exc}") from exc
        self._started = time.monotonic()
        self._monitor = TreeMonitor(self._proc.pid)
        log.info("payload started, pid %d: %s", self._proc.pid, shlex.join(self.argv))

    def kill(self, reason: str, category: str | None = None) -> None:
        """Ask the payload to stop (SIGTERM to its group, SIGKILL after the grace);
        ``category`` is set when one of the pilot's own limits was hit."""
        with self._lock:
            if self._kill_reason is None:
                self._kill_reason, self._kill_category = reason, category
            if self._proc is None or self._killed_at is not None:
                return  # not started yet (wait() will kill it) or already being killed
            self._killed_at = time.monotonic()
            pid = self._proc.pid
        log.warning("killing payload pid %d: %s", pid, self._kill_reason)
        _signal_group(pid, signal.SIGTERM)

    def metrics(self) -> dict[str, float | int]:
        """Metrics so far, for heartbeats."""
        wall = time.monotonic() - self._started if self._started else 0.0
        m = self._monitor
        return {"cpu_s": round(m.cpu_s if m else 0.0, 3), "wall_s": round(wall, 3),
                "max_rss_kb": m.max_rss_kb if m else 0, "max_pss_kb": m.max_pss_kb if m else 0,
                "max_procs": m.max_procs if m else 0}

    def wait(self) -> PayloadResult:
        """Wait for the end, enforcing the walltime; reap the whole process group."""
        if self._proc is None:
            raise PayloadError("the payload was not started")
        pid = self._proc.pid
        if self._kill_reason is not None and self._killed_at is None:
            self.kill(self._kill_reason)
        timed_out = False
        next_sample = 0.0
        pause = 0.02
        while True:
            reaped, status, usage = os.wait4(pid, os.WNOHANG)
            if reaped:
                break
            now = time.monotonic()
            if (self.walltime_s and not timed_out and self._kill_reason is None
                    and now - self._started > self.walltime_s):
                timed_out = True
                self.kill(f"walltime of {self.walltime_s:g} s exceeded", KILL_WALLTIME)
            if self._killed_at is not None and now - self._killed_at > self.kill_grace_s:
                _signal_group(pid, signal.SIGKILL)
            if now >= next_sample:
                self._check_limits()
                next_sample = now + self.sample_every_s
            time.sleep(pause)
            pause = min(pause * 2, 0.25)
        # Tell Popen the child is reaped, or it would later report exit code 0.
        exit_code = os.waitstatus_to_exitcode(status)
        self._proc.returncode = exit_code
        wall = time.monotonic() - self._started
        _signal_group(pid, signal.SIGKILL)  # leftovers the payload left running
        cpu = usage.ru_utime + usage.ru_stime
        m = self._monitor
        assert m is not None  # set by start()
        result = PayloadResult(
            exit_code=exit_code, wall_s=wall, cpu_s=max(cpu, m.cpu_s),
            max_rss_kb=max(int(usage.ru_maxrss), m.max_rss_kb),
            timed_out=timed_out, kill_reason=self._kill_reason, max_pss_kb=m.max_pss_kb,
            max_procs=m.max_procs, samples=m.samples, kill_category=self._kill_category)
        log.info("payload pid %d ended: exit %d, wall %.1f s, cpu %.1f s, max rss %d kB, "
                 "max pss %d kB", pid, exit_code, result.wall_s, result.cpu_s,
                 result.max_rss_kb, result.max_pss_kb)
        return result

    def _check_limits(self) -> None:
        """Sample the tree; kill it over the memory limit or a runaway stdout/stderr."""
        m = self._monitor
        if m is None or m.sample() is None or self._kill_reason is not None:
            return
        if self.memory_limit_mb:
            used_kb, what = (m.max_pss_kb, "PSS") if m.max_pss_kb else (m.max_rss_kb, "RSS")
            if used_kb > self.memory_limit_mb * 1024:
                self.kill(f"memory limit of {self.memory_limit_mb:g} MB exceeded: {what} "
                          f"{used_kb / 1024:.0f} MB", KILL_MEMORY)
                return
        for name in (STDOUT_NAME, STDERR_NAME):
            size = file_size(self.workdir / name)
            if size > self.output_limit_bytes:
                self.kill(f"{name} grew past {self.output_limit_bytes} bytes ({size})",
                          KILL_OUTPUT)
                return


def run_payload(
    argv: Sequence[str], workdir: Path, *, walltime_s: float | None = None,
    env: Mapping[str, str] | None = None, kill_grace_s: float = 10.0,
    memory_limit_mb: float | None = None, sample_every_s: float = 2.0,
    output_limit_bytes: int = OUTPUT_LIMIT_BYTES,
) -> PayloadResult:
    """Start a payload and wait for it."""
    payload = Payload(argv, workdir, walltime_s=walltime_s, env=env, kill_grace_s=kill_grace_s,
                      memory_limit_mb=memory_limit_mb, sample_every_s=sample_every_s,
                      output_limit_bytes=output_limit_bytes)
    payload.start()
    return payload.wait()


def _open_new(path: Path) -> BinaryIO:
    """Open ``path`` for writing without following a symbolic link planted there."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        raise PayloadError(f"cannot create {path.name} in the work dir: {exc.strerror}") from None
    return os.fdopen(fd, "wb")


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
