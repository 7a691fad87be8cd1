"""Run one job from its description to its final report.

The sequence is PanDA's: report ``starting``, stage in, report ``running``, run
the payload under a heartbeat, stage out the outputs, pack and stage out the
log (also when the job failed), report ``finished`` with the outputs or
``failed`` with an error category from ``wire.ErrorCategory``. The job
description is parsed into a ``wire.JobSpec`` first: a malformed one is
reported ``failed`` (``pilot``) without running anything. A 409 at any point
means the attempt is no longer ours: kill the payload, report nothing more, and
leave.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dawms.pilot.client import ClientError, JobRef, PilotClient, StaleJob
from dawms.pilot.commands import CommandPoller
from dawms.pilot.heartbeat import Heartbeat
from dawms.pilot.log import LOG_MEMBERS, PILOT_LOG_NAME, make_log_tarball, write_job_spec
from dawms.pilot.payload import STDERR_NAME, Payload, PayloadError, PayloadResult, build_command
from dawms.pilot.stagein import StageInError, bad_replicas, direct_inputs, stage_in
from dawms.pilot.stageout import StageOutError, stage_out_log, stage_out_outputs
from dawms.wire import (
    BadReplicaReport,
    Command,
    InputFile,
    JobSpec,
    OutputReport,
    OutputSpec,
    WireError,
)
from dawms.wire.command import payload_env
from dawms.wire.names import check_name, check_scope, name_problem, split_did

log = logging.getLogger(__name__)
_PACKAGE_LOGGER = "dawms.pilot"
_DIAG_MAX = 1000


class Outcome(enum.StrEnum):
    FINISHED = "finished"  # reported finished
    FAILED = "failed"  # reported failed
    ABANDONED = "abandoned"  # the server said 409: the attempt is not ours any more
    LOST = "lost"  # the server stayed unreachable or refused; no final report made it
    REFUSED = "refused"  # the job description was too malformed to report on


@dataclass(frozen=True)
class JobResult:
    outcome: Outcome
    error_category: str = ""
    error_diag: str = ""
    exit_code: int | None = None
    outputs: list[OutputReport] = field(default_factory=list)


class _Failure(Exception):
    def __init__(self, category: str, diag: str) -> None:
        super().__init__(diag)
        self.category = category
        self.diag = diag


class JobRunner:
    """Runs one job in ``workdir``; ``abort`` may be called from another thread
    or a signal handler (for instance when the batch system stops the pilot)."""

    def __init__(
        self, client: PilotClient, spec: JobSpec | Mapping[str, Any], workdir: Path, *,
        kill_grace_s: float = 10.0, command_poll_s: float = 0.0, sample_every_s: float = 2.0,
    ) -> None:
        self.client = client
        self.workdir = Path(workdir)
        self.bad_spec = ""  # why the job description was refused
        if isinstance(spec, JobSpec):
            self.spec: JobSpec | None = spec
        else:
            try:
                self.spec = JobSpec.from_dict(spec)
            except WireError as exc:
                self.spec, self.bad_spec = None, str(exc)
        try:
            self.ref: JobRef | None = JobRef.of(self.spec or spec)
        except WireError as exc:
            self.ref, self.bad_spec = None, self.bad_spec or str(exc)
        self.kill_grace_s = kill_grace_s
        self.command_poll_s = command_poll_s  # 0: commands come with heartbeats only
        self.sample_every_s = sample_every_s  # the payload's process tree is read this often
        self.metrics: dict[str, float | int] = {"bytes_in": 0, "bytes_out": 0}
        self.exit_code: int | None = None  # the payload's, once it ended
        self.bad_replicas: list[BadReplicaReport] = []  # given up in stage-in: reported
        self._abort: tuple[str, str] | None = None
        self._payload: Payload | None = None
        self._report_lock = threading.Lock()  # reports and heartbeats go out one at a time

    def terminate(self, reason: str) -> None:
        """The pilot is told to stop (SIGTERM from the batch system): a payload that
        already ended still has its outputs staged out and reported; otherwise the
        job is aborted as ``killed``."""
        if self.exit_code is not None and self._abort is None:
            log.warning("%s after the payload ended: staging out before leaving", reason)
            return
        self.abort("killed", reason)

    def abort(self, category: str, diag: str) -> None:
        """Stop the job: kill the payload if it runs; the job will report failed."""
        if self._abort is None:
            self._abort = (category, diag)
        if self._payload is not None:
            self._payload.kill(diag)

    def run(self) -> JobResult:
        if self.ref is None:
            log.error("refusing a job description with no valid fence: %s", self.bad_spec)
            return JobResult(Outcome.REFUSED, "pilot", self.bad_spec[:_DIAG_MAX])
        self.workdir.mkdir(parents=True, exist_ok=True)
        with _job_log_file(self.workdir / PILOT_LOG_NAME):
            log.info("job %d attempt %d (%s) in %s", self.ref.job_id, self.ref.attempt,
                     self.spec.job_name if self.spec else "?", self.workdir)
            try:
                if self.spec is None:
                    diag = f"malformed job description: {self.bad_spec}"[:_DIAG_MAX]
                    log.error("job %d: %s", self.ref.job_id, diag)
                    self._report("failed", error_category="pilot", error_diag=diag)
                    return JobResult(Outcome.FAILED, "pilot", diag)
                return self._run(self.spec)
            except StaleJob as exc:
                if self._payload is not None:
                    self._payload.kill("the attempt is stale")
                log.warning("job %d attempt %d is stale, abandoning it: %s",
                            self.ref.job_id, self.ref.attempt, exc)
                return JobResult(Outcome.ABANDONED, error_diag=str(exc))
            except ClientError as exc:  # ServerUnavailable, or a refused report
                log.error("job %d attempt %d: could not report to the server: %s",
                          self.ref.job_id, self.ref.attempt, exc)
                return JobResult(Outcome.LOST, error_diag=str(exc))

    def _run(self, spec: JobSpec) -> JobResult:
        write_job_spec(spec.to_dict(), self.workdir)
        heartbeat = Heartbeat(self.client, self._ref, spec.heartbeat_s,
                              metrics=self._current_metrics, kill=self.abort, state="starting",
                              lock=self._report_lock)
        if self._report("starting") == Command.KILL:
            self.abort("killed", "killed on the server's command")
        failure: _Failure | None = None
        outputs: list[OutputReport] = []
        poller = CommandPoller(self.client, self._ref, self.command_poll_s, kill=self.abort)
        try:
            heartbeat.start()
            poller.start()
            try:
                outputs = self._work(spec, heartbeat)
            finally:
                poller.stop()
                heartbeat.stop()
            if heartbeat.stale or poller.stale:
                raise StaleJob("a heartbeat was refused with 409")
            self._raise_if_aborted()
        except _Failure as exc:
            failure = exc
        except (StageInError, PayloadError) as exc:
            if isinstance(exc, StageInError):
                self.bad_replicas = exc.bad
            failure = _Failure("stagein" if isinstance(exc, StageInError) else "payload", str(exc))
        except StageOutError as exc:
            failure = _Failure("stageout", str(exc))
        except ClientError:  # StaleJob, ServerUnavailable: handled by run()
            raise
        except Exception as exc:
            log.exception("pilot error in job %d", self._ref.job_id)
            failure = _Failure("pilot", f"{type(exc).__name__}: {exc}")
        if heartbeat.stale or poller.stale:  # the abort it caused is not ours to report
            raise StaleJob("the server refused this attempt as stale")
        if failure is not None:
            log.error("job %d failed (%s): %s", self._ref.job_id, failure.category, failure.diag)
            outputs = []  # outputs of a failed job are not registered
        failure = self._stage_out_log(spec, outputs, failure)
        if failure is None:
            self._report("finished", exit_code=self.exit_code, outputs=outputs)
            return JobResult(Outcome.FINISHED, exit_code=self.exit_code, outputs=outputs)
        diag = failure.diag[:_DIAG_MAX]
        self._report("failed", exit_code=self.exit_code, error_category=failure.category,
                     error_diag=diag, outputs=outputs, bad_replicas=self.bad_replicas)
        return JobResult(Outcome.FAILED, failure.category, diag, self.exit_code, outputs)

    def _work(self, spec: JobSpec, heartbeat: Heartbeat) -> list[OutputReport]:
        """Stage in, run, stage out; return the outputs' report entries."""
        _check_names(spec)
        if spec.direct_access:  # the payload reads the inputs in place, by URL
            direct = direct_inputs(spec)
            names = [d.url for d in direct]
            self.metrics["direct_access_files"] = len(direct)
        else:
            staged = stage_in(spec, self.workdir, should_stop=lambda: self._abort is not None)
            self.metrics["bytes_in"] = sum(f.size for f in staged)
            self.bad_replicas = bad_replicas(staged)
            names = [f.lfn for f in staged]
        self._raise_if_aborted()
        heartbeat.state = "running"  # before the report, so no 'starting' beat follows it
        if self._report("running", bad_replicas=self.bad_replicas) == Command.KILL:
            self.abort("killed", "killed on the server's command")
        self._raise_if_aborted()
        result = self._run_payload(spec, names)
        self.exit_code = result.exit_code
        self.metrics.update(result.metrics())
        if heartbeat.stale:
            raise StaleJob("a heartbeat was refused with 409")
        self._raise_if_aborted()
        if result.kill_category:  # one of the pilot's limits: walltime, memory, output size
            raise _Failure(result.kill_category,
                           f"{result.kill_reason}; {_tail(self.workdir / STDERR_NAME)}")
        if result.exit_code != 0:
            raise _Failure("payload", f"exit code {result.exit_code}: "
                                      f"{_tail(self.workdir / STDERR_NAME)}")
        missing = [o.lfn for o in spec.outputs if not (self.workdir / o.lfn).is_file()]
        if missing:
            raise _Failure("payload", f"exit code 0 but outputs missing: {', '.join(missing)}")
        outputs = stage_out_outputs(spec, self.workdir)
        self.metrics["bytes_out"] = sum(o.size for o in outputs)
        return outputs

    def _run_payload(self, spec: JobSpec, inputs: list[str]) -> PayloadResult:
        argv = build_command(spec.transformation, inputs=inputs,
                             outputs=[o.lfn for o in spec.outputs],
                             job_id=spec.job_id, attempt=spec.attempt)
        env = dict(os.environ)
        env.update({"DAWMS_JOB_ID": str(spec.job_id), "DAWMS_ATTEMPT": str(spec.attempt),
                    "DAWMS_CORES": str(spec.cores), "DAWMS_WORKDIR": str(self.workdir),
                    **payload_env(inputs, [o.lfn for o in spec.outputs])})
        payload = Payload(argv, self.workdir, walltime_s=spec.walltime_s, env=env,
                          kill_grace_s=self.kill_grace_s, memory_limit_mb=spec.memory_mb,
                          sample_every_s=self.sample_every_s)
        self._payload = payload
        if self._abort is not None:  # abort() came before the payload object existed
            payload.kill(self._abort[1])
        payload.start()
        try:
            return payload.wait()
        finally:
            self._payload = None

    def _stage_out_log(
        self, spec: JobSpec, outputs: list[OutputReport], failure: _Failure | None
    ) -> _Failure | None:
        if spec.log is None:
            return failure
        if problem := name_problem(spec.log.lfn, "log file name"):
            return failure or _Failure("pilot", problem)
        try:
            tarball = make_log_tarball(self.workdir, spec.log.lfn)
            entry = stage_out_log(spec, tarball, self.workdir)
        except (StageOutError, OSError, ValueError) as exc:
            log.error("log of job %d not staged out: %s", spec.job_id, exc)
            if failure is None:
                return _Failure("stageout", f"log: {exc}")
            return _Failure(failure.category, f"{failure.diag}; log not staged out: {exc}")
        outputs.append(entry)
        self.metrics["bytes_out"] = int(self.metrics["bytes_out"]) + entry.size
        return failure

    def _raise_if_aborted(self) -> None:
        if self._abort is not None:
            raise _Failure(*self._abort)

    def _current_metrics(self) -> dict[str, float | int]:
        payload = self._payload
        return {**self.metrics, **(payload.metrics() if payload else {})}

    @property
    def _ref(self) -> JobRef:
        assert self.ref is not None  # run() refuses a spec without a fence
        return self.ref

    def _report(self, state: str, **fields: Any) -> str | None:
        ref = self._ref
        with self._report_lock:
            command = self.client.update_job(ref, state, metrics=self._current_metrics(),
                                             **fields)
        log.info("reported job %d attempt %d %s", ref.job_id, ref.attempt, state)
        return command


def run_job(
    client: PilotClient, spec: JobSpec | Mapping[str, Any], workdir: Path, *,
    kill_grace_s: float = 10.0, command_poll_s: float = 0.0, sample_every_s: float = 2.0,
) -> JobResult:
    """Run one job (a ``wire.JobSpec``, or its dict to parse) in ``workdir`` and report it."""
    return JobRunner(client, spec, workdir, kill_grace_s=kill_grace_s,
                     command_poll_s=command_poll_s, sample_every_s=sample_every_s).run()


def _check_names(spec: JobSpec) -> None:
    """Refuse a spec whose scopes, file or dataset names break the grammar
    (``catalog/names.py``, read through ``wire/names.py``), or whose files would
    collide in the work dir."""
    entries: list[tuple[str, InputFile | OutputSpec]] = [("input", f) for f in spec.inputs]
    entries += [("output", f) for f in spec.outputs]
    if spec.log is not None:
        entries.append(("log", spec.log))
    problems, seen = [], set()
    for what, entry in entries:
        try:
            check_scope(entry.scope)
            lfn = check_name(entry.lfn, f"{what} file name")
            if what != "input" or entry.dataset:
                split_did(entry.dataset)
        except ValueError as exc:
            problems.append(f"{what}: {exc}")
            continue
        if lfn in seen or lfn in LOG_MEMBERS:
            problems.append(f"{what} file name {lfn!r} is used twice in the work dir")
        seen.add(lfn)
    if problems:
        raise _Failure("pilot", "the job spec is refused: " + "; ".join(problems))


def _tail(path: Path, limit: int = 400) -> str:
    try:  # never through a link the payload left in place of its stderr
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as f:
            f.seek(max(0, os.fstat(fd).st_size - limit))
            text = f.read(limit).decode(errors="replace").strip()
    except OSError:
        return ""
    return f"stderr: ...{text}" if text else "no stderr"


@contextlib.contextmanager
def _job_log_file(path: Path) -> Iterator[None]:
    """Copy the pilot's log records to the job's ``pilot.log`` while it runs."""
    handler = logging.FileHandler(path)
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger(_PACKAGE_LOGGER)
    level = logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        handler.close()
