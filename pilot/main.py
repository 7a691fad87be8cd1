"""The ``dawms-pilot`` command: pull jobs for one queue and run them until idle.

A pilot asks the server for one job at a time, runs it in
``<workdir>/<job_id>.<attempt>/`` and asks again. The work dir is by default a
fresh directory under the system temp dir (``$TMPDIR``), removed at exit; each
job's directory is removed after the job, unless ``--keep-workdir`` keeps the
failed ones (and the default work dir) for inspection. When no job comes it
polls every
``--poll-interval`` seconds; while the server says jobs of the queue are
pending (waiting for data) it keeps waiting, and once there has been neither a
job nor a pending one for ``--idle-timeout`` seconds it exits 0. SIGTERM or
SIGINT end the pilot: a job whose payload already ended still stages out
and reports; otherwise the payload is killed and the job reported failed
(``killed``).

Its bearer token (a pilot token bound to its queue) comes from ``--token-file``
or ``$DAWMS_TOKEN``, never from a command-line value (which any local user could
read in the process list); the variable is removed at start, so payloads never
see it.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import FrameType
from typing import Any

from dawms.pilot.client import DEFAULT_GIVE_UP_S, ClientError, JobRef, PilotClient
from dawms.pilot.job import JobRunner, Outcome
from dawms.wire import WireError

log = logging.getLogger("dawms.pilot.main")

TOKEN_ENV = "DAWMS_TOKEN"  # read once and removed, so payloads never see it
_OLD_TOKEN_ENV = "DAWMS_PILOT_TOKEN"  # the earlier name, still read (and removed)
MAX_TOKEN_BYTES = 8192


class TokenFileError(Exception):
    """The token file cannot be used."""


def load_token(token_file: Path | None) -> str | None:
    """The pilot's token: from ``token_file`` if given, else from the environment.

    Both token variables are removed from the environment either way."""
    from_env = os.environ.pop(TOKEN_ENV, None) or os.environ.pop(_OLD_TOKEN_ENV, None)
    os.environ.pop(_OLD_TOKEN_ENV, None)
    if token_file is None:
        return from_env.strip() if from_env else None
    try:
        with open(token_file, "rb") as f:
            raw = f.read(MAX_TOKEN_BYTES + 1)
    except OSError as exc:
        raise TokenFileError(f"cannot read the token file: {exc.strerror}") from None
    if len(raw) > MAX_TOKEN_BYTES:
        raise TokenFileError(f"the token file is larger than {MAX_TOKEN_BYTES} bytes")
    try:
        token = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        raise TokenFileError("the token file is not ASCII text") from None
    if not token:
        raise TokenFileError("the token file is empty")
    with contextlib.suppress(OSError):
        if os.stat(token_file).st_mode & 0o077:
            log.warning("the token file can be read by other users; chmod 600 it")
    return token


def default_pilot_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Pilot:
    """The acquire-run loop of one pilot process."""

    def __init__(
        self,
        client: PilotClient,
        queue: str,
        workdir: Path,
        *,
        pilot_id: str | None = None,
        max_jobs: int = 0,
        idle_timeout_s: float = 60.0,
        poll_interval_s: float = 2.0,
        lifetime_s: float = 0.0,
        kill_grace_s: float = 10.0,
        keep_workdir: bool = False,
        sample_every_s: float = 2.0,
    ) -> None:
        self.client = client
        self.queue = queue
        self.workdir = Path(workdir)
        self.pilot_id = pilot_id or default_pilot_id()
        self.max_jobs = max_jobs
        self.idle_timeout_s = idle_timeout_s
        self.poll_interval_s = poll_interval_s
        self.lifetime_s = lifetime_s
        self.kill_grace_s = kill_grace_s
        self.keep_workdir = keep_workdir
        self.sample_every_s = sample_every_s
        self.outcomes: Counter[str] = Counter()
        self.stop_reason: str | None = None
        self._stop = threading.Event()
        self._runner: JobRunner | None = None

    def stop(self, reason: str) -> None:
        """Finish now: abort the running job (reported failed) and leave the loop."""
        self.stop_reason = reason
        self._stop.set()
        runner = self._runner
        if runner is not None:
            runner.terminate(reason)

    def run(self) -> int:
        """Loop until idle, ``max_jobs`` done, lifetime over or stopped; return an exit code."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        log.info("pilot %s for queue %s in %s", self.pilot_id, self.queue, self.workdir)
        started = last_work = time.monotonic()
        while not self._stop.is_set():
            jobs_done = sum(self.outcomes.values())
            if self.max_jobs and jobs_done >= self.max_jobs:
                log.info("ran %d jobs, the maximum", jobs_done)
                break
            left = self.lifetime_s - (time.monotonic() - started) if self.lifetime_s else 0.0
            if self.lifetime_s and left < 1:
                log.info("lifetime of %g s reached", self.lifetime_s)
                break
            try:  # with a lifetime, only a job whose walltime fits in what is left
                acquired = self.client.acquire_jobs(self.queue, self.pilot_id, 1,
                                                    max_walltime_s=left)
            except ClientError as exc:
                log.error("cannot get jobs: %s", exc)
                return 2
            if acquired.jobs:
                for spec in acquired.jobs:
                    self._run_one(spec, acquired.command_poll_s)
                last_work = time.monotonic()
                continue
            now = time.monotonic()
            if acquired.pending > 0:
                last_work = now
            elif now - last_work >= self.idle_timeout_s:
                log.info("no work for %g s, exiting", self.idle_timeout_s)
                break
            self._stop.wait(self.poll_interval_s)
        log.info("pilot done: %s", dict(self.outcomes) or "no jobs")
        return 1 if self.stop_reason else 0

    def _run_one(self, spec: Mapping[str, Any], command_poll_s: float = 0.0) -> None:
        try:  # the job's own dir is named by its fence, once that is checked
            ref: JobRef | None = JobRef.of(spec)
        except WireError:
            ref = None  # the runner refuses the job without touching the disk
        jobdir = self.workdir / (f"{ref.job_id}.{ref.attempt}" if ref else "refused")
        runner = JobRunner(self.client, spec, jobdir, kill_grace_s=self.kill_grace_s,
                           command_poll_s=command_poll_s, sample_every_s=self.sample_every_s)
        self._runner = runner
        if self._stop.is_set():
            runner.abort("killed", self.stop_reason or "pilot stopping")
        try:
            result = runner.run()
        finally:
            self._runner = None
        self.outcomes[result.outcome] += 1
        log.info("job %s attempt %s: %s %s", ref.job_id if ref else "?",
                 ref.attempt if ref else "?", result.outcome,
                 f"({result.error_category}: {result.error_diag})" if result.error_category
                 else "")
        if result.outcome is Outcome.REFUSED:
            return
        if result.outcome is Outcome.FINISHED or not self.keep_workdir:
            shutil.rmtree(jobdir, ignore_errors=True)
        else:
            log.info("keeping %s for inspection", jobdir)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dawms-pilot", description=__doc__.split("\n\n")[0],
                                allow_abbrev=False)  # --token must not mean --token-file
    p.add_argument("--server", required=True, help="server base URL, e.g. http://host:8080")
    p.add_argument("--queue", required=True, help="the queue (PanDA resource) to pull jobs for")
    p.add_argument("--workdir", type=Path, default=None,
                   help="where job dirs go (default: a fresh dir under $TMPDIR, removed at "
                        "exit)")
    p.add_argument("--keep-workdir", action="store_true",
                   help="keep each failed job's dir (and a default work dir) for inspection")
    p.add_argument("--max-jobs", type=int, default=0, help="stop after N jobs (0: no limit)")
    p.add_argument("--idle-timeout", type=float, default=60.0,
                   help="exit after S seconds with no job and none pending (default 60)")
    p.add_argument("--poll-interval", type=float, default=2.0,
                   help="seconds between asks when no job came (default 2)")
    p.add_argument("--pilot-id", default=None, help="default: host:pid:random")
    p.add_argument("--lifetime", type=float, default=0.0,
                   help="run jobs for S seconds: take only jobs whose walltime fits in what "
                        "is left, none after (0: no limit)")
    p.add_argument("--give-up-after", type=float, default=DEFAULT_GIVE_UP_S,
                   help="seconds to keep retrying an unreachable server (default 3 h)")
    p.add_argument("--kill-grace", type=float, default=10.0,
                   help="seconds between SIGTERM and SIGKILL for a payload (default 10)")
    p.add_argument("--token-file", type=Path, default=None,
                   help=f"file holding the bearer token (default: ${TOKEN_ENV})")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s [%(name)s] %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        token = load_token(args.token_file)
    except TokenFileError as exc:
        log.error("%s", exc)
        return 2
    with PilotClient(args.server, give_up_after_s=args.give_up_after, token=token) as client, \
            _workdir(args.workdir, args.keep_workdir) as workdir:
        pilot = Pilot(client, args.queue, workdir, pilot_id=args.pilot_id,
                      max_jobs=args.max_jobs, idle_timeout_s=args.idle_timeout,
                      poll_interval_s=args.poll_interval, lifetime_s=args.lifetime,
                      kill_grace_s=args.kill_grace, keep_workdir=args.keep_workdir)
        with _stop_on_signals(pilot):
            return pilot.run()


@contextlib.contextmanager
def _workdir(given: Path | None, keep: bool) -> Iterator[Path]:
    """The given work dir, or a fresh one under the temp dir, removed at the end
    unless ``keep``."""
    if given is not None:
        yield given
        return
    made = Path(tempfile.mkdtemp(prefix="dawms-pilot-"))
    try:
        yield made
    finally:
        if keep:
            log.info("keeping the work dir %s", made)
        else:
            shutil.rmtree(made, ignore_errors=True)


@contextlib.contextmanager
def _stop_on_signals(pilot: Pilot) -> Iterator[None]:
    """Route SIGTERM/SIGINT to ``pilot.stop`` (only possible in the main thread)."""
    def handle(signum: int, frame: FrameType | None) -> None:
        pilot.stop(f"pilot received {signal.Signals(signum).name}")

    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
