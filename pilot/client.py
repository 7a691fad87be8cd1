"""The pilot's HTTP client for the protocol of ``dawms.wire``.

Requests are built as wire records and replies parsed into them, so a malformed
job description or reply is refused here with a clear ``BadReply``.

A pilot must outlive short server outages: connection errors, 5xx and 429
answers are retried with capped exponential backoff until ``give_up_after_s``
(3 h by default, as PanDA's pilot does). A 409 means the pilot's
``(job_id, attempt, lease_token)`` is no longer current; it becomes
``StaleJob`` and the caller must drop the job without reporting again.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from dawms import wire
from dawms.wire import (
    AcquireReply,
    AcquireRequest,
    BadReplicaReport,
    BulkResult,
    BulkUpdate,
    CommandQuery,
    JobReport,
    JobSpec,
    OutputReport,
    UpdateReply,
    WireError,
)

log = logging.getLogger(__name__)

DEFAULT_GIVE_UP_S = 3 * 3600.0


class ClientError(Exception):
    """The server refused a request (4xx other than 409, or success=false)."""


class StaleJob(ClientError):
    """HTTP 409: the job attempt or lease is no longer ours; stop working on it."""


class ServerUnavailable(ClientError):
    """The server could not be reached or kept failing until we gave up."""


class BadReply(ClientError):
    """The server's reply does not match its wire record."""


@dataclass(frozen=True)
class Acquired:
    """The answer to acquire_jobs: job descriptions as the server sent them (the job
    runner parses each into a ``JobSpec`` and reports a malformed one failed), and
    the jobs of the queue not yet runnable."""

    jobs: list[Mapping[str, Any]]
    pending: int
    command_poll_s: float = 0.0  # how often to ask get_command while a job runs (0: never)


@dataclass(frozen=True)
class JobRef:
    """What fences every report: the attempt and lease the pilot holds."""

    job_id: int
    attempt: int
    lease_token: str

    @classmethod
    def of(cls, spec: JobSpec | Mapping[str, Any]) -> JobRef:
        """The fence of a claimed job spec (a record, or a raw one whose rest may be
        malformed), checked as a report will carry it; ``WireError`` if it cannot."""
        fence = spec.to_dict() if isinstance(spec, JobSpec) else spec
        probe = JobReport.from_dict({k: fence.get(k) for k in ("job_id", "attempt",
                                                               "lease_token")}
                                    | {"state": "failed"})
        return cls(probe.job_id, probe.attempt, probe.lease_token)


class PilotClient:
    """Calls acquire_jobs / update_job / update_jobs_bulk on one server."""

    def __init__(
        self,
        server_url: str,
        *,
        timeout_s: float = 30.0,
        give_up_after_s: float = DEFAULT_GIVE_UP_S,
        backoff_initial_s: float = 1.0,
        backoff_max_s: float = 60.0,
        token: str | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=server_url.rstrip("/"), timeout=timeout_s,
                                  headers=headers, transport=transport)
        self.give_up_after_s = give_up_after_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> PilotClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def acquire_jobs(self, queue: str, pilot_id: str, n_jobs: int = 1, *,
                     max_walltime_s: float = 0.0) -> Acquired:
        """Claim jobs; ``max_walltime_s`` > 0 takes only jobs whose walltime fits in it."""
        request = AcquireRequest(queue=queue, pilot_id=pilot_id, n_jobs=n_jobs,
                                 max_walltime_s=max_walltime_s)
        data = self._post(wire.ACQUIRE_JOBS, request.to_dict())
        if not isinstance(data, Mapping) or not isinstance(data.get("jobs", []), list):
            raise BadReply(f"{wire.ACQUIRE_JOBS}: malformed reply {str(data)[:300]}")
        jobs = [j for j in data.get("jobs", []) if isinstance(j, Mapping)]
        try:  # the envelope's own fields; each job is parsed by the job runner
            reply = AcquireReply.from_dict({"pending": data.get("pending", 0),
                                            "command_poll_s": data.get("command_poll_s", 0.0)})
        except WireError as exc:
            raise BadReply(f"{wire.ACQUIRE_JOBS}: {exc}") from None
        return Acquired(jobs=jobs, pending=reply.pending, command_poll_s=reply.command_poll_s)

    def get_command(self, ref: JobRef) -> str | None:
        """Ask once (no retries: the caller polls again) for the job's pending command."""
        body = CommandQuery(job_id=ref.job_id, attempt=ref.attempt, lease_token=ref.lease_token)
        data = self._post(wire.GET_COMMAND, body.to_dict(), retry=False)
        try:
            return UpdateReply.from_dict(data or {}).command
        except WireError as exc:
            raise BadReply(f"{wire.GET_COMMAND}: {exc}") from None

    def update_job(
        self,
        ref: JobRef,
        state: str,
        *,
        metrics: dict[str, float | int] | None = None,
        exit_code: int | None = None,
        error_category: str = "",
        error_diag: str = "",
        outputs: list[OutputReport] | None = None,
        bad_replicas: list[BadReplicaReport] | None = None,
        cancel: threading.Event | None = None,
    ) -> str | None:
        """Send a heartbeat or a report; return the server's command (or None).

        Setting ``cancel`` stops the retries (``ServerUnavailable``)."""
        body = update_body(ref, state, metrics=metrics, exit_code=exit_code,
                           error_category=error_category, error_diag=error_diag, outputs=outputs,
                           bad_replicas=bad_replicas)
        data = self._post(wire.UPDATE_JOB, body.to_dict(), cancel=cancel)
        try:
            return UpdateReply.from_dict(data or {}).command
        except WireError as exc:
            raise BadReply(f"{wire.UPDATE_JOB}: {exc}") from None

    def update_jobs_bulk(self, updates: list[JobReport]) -> list[BulkResult]:
        """Send many reports at once; one result per report, in order."""
        body = BulkUpdate(updates=list(updates))
        data = self._post(wire.UPDATE_JOBS_BULK, body.to_dict())
        if not isinstance(data, list) or len(data) != len(updates):
            raise BadReply(f"{wire.UPDATE_JOBS_BULK}: expected {len(updates)} results")
        try:
            return [BulkResult.from_dict(r) for r in data]
        except WireError as exc:
            raise BadReply(f"{wire.UPDATE_JOBS_BULK}: {exc}") from None

    def _post(
        self, path: str, body: dict[str, Any], *, cancel: threading.Event | None = None,
        retry: bool = True,
    ) -> Any:
        """POST ``body``; return the envelope's ``data``, retrying what may pass later
        (unless ``retry`` is false: then ``ServerUnavailable`` at the first failure)."""
        deadline = time.monotonic() + self.give_up_after_s
        delay = self.backoff_initial_s
        while True:
            try:
                reply = self._http.post(path, json=body)
            except httpx.TransportError as exc:
                problem, retry_after = f"{type(exc).__name__}: {exc}", None
            else:
                if reply.status_code == wire.HTTP_STALE:
                    raise StaleJob(f"{path}: {_message(reply)}")
                if reply.status_code < 400:
                    return _data(path, reply)
                if reply.status_code < 500 and reply.status_code != 429:
                    raise ClientError(f"{path}: HTTP {reply.status_code}: {_message(reply)}")
                problem = f"HTTP {reply.status_code}: {_message(reply)}"
                retry_after = _retry_after(reply)
            if not retry:
                raise ServerUnavailable(f"{path}: {problem}")
            wait = min(retry_after or delay * random.uniform(0.8, 1.2), self.backoff_max_s)
            left = deadline - time.monotonic()
            if left <= 0:
                raise ServerUnavailable(
                    f"{path}: gave up after {self.give_up_after_s:g} s: {problem}")
            log.warning("%s failed (%s); retrying in %.1f s", path, problem, min(wait, left))
            if (cancel or threading.Event()).wait(min(wait, left)):
                raise ServerUnavailable(f"{path}: cancelled while retrying: {problem}")
            delay = min(delay * 2, self.backoff_max_s)


def update_body(
    ref: JobRef,
    state: str,
    *,
    metrics: dict[str, float | int] | None = None,
    exit_code: int | None = None,
    error_category: str = "",
    error_diag: str = "",
    outputs: list[OutputReport] | None = None,
    bad_replicas: list[BadReplicaReport] | None = None,
) -> JobReport:
    """The update_job report (also one item of a bulk update); ``WireError`` (a
    ``ValueError``) for a state a pilot may not report or an unknown error category."""
    return JobReport.from_dict({
        "job_id": ref.job_id, "attempt": ref.attempt, "lease_token": ref.lease_token,
        "state": state, "metrics": dict(metrics or {}), "exit_code": exit_code,
        "error_category": error_category, "error_diag": error_diag[:wire.reports.DIAG_MAX],
        "outputs": [o.to_dict() for o in outputs or []],
        "bad_replicas": [b.to_dict() for b in bad_replicas or []],
    })


def _message(reply: httpx.Response) -> str:
    try:
        body = reply.json()
    except ValueError:
        return reply.text[:300]
    if isinstance(body, dict):
        return str(body.get("message") or body.get("detail") or body)[:300]
    return str(body)[:300]


def _data(path: str, reply: httpx.Response) -> Any:
    try:
        body = reply.json()
    except ValueError as exc:
        raise ClientError(f"{path}: reply is not JSON: {reply.text[:300]}") from exc
    if not isinstance(body, dict) or not body.get("success", False):
        raise ClientError(f"{path}: refused: {_message(reply)}")
    return body.get("data")


def _retry_after(reply: httpx.Response) -> float | None:
    try:
        return max(0.0, float(reply.headers.get("Retry-After", "")))
    except ValueError:
        return None
