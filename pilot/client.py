"""The pilot's HTTP client for the protocol in ``wire.py``.

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
from dataclasses import dataclass
from typing import Any

import httpx

from dawms.pilot import wire

log = logging.getLogger(__name__)

DEFAULT_GIVE_UP_S = 3 * 3600.0


class ClientError(Exception):
    """The server refused a request (4xx other than 409, or success=false)."""


class StaleJob(ClientError):
    """HTTP 409: the job attempt or lease is no longer ours; stop working on it."""


class ServerUnavailable(ClientError):
    """The server could not be reached or kept failing until we gave up."""


@dataclass(frozen=True)
class Acquired:
    """The answer to acquire_jobs: job specs, and jobs of the queue not yet runnable."""

    jobs: list[dict[str, Any]]
    pending: int


@dataclass(frozen=True)
class JobRef:
    """What fences every report: the attempt and lease the pilot holds."""

    job_id: int
    attempt: int
    lease_token: str

    @classmethod
    def of(cls, spec: dict[str, Any]) -> JobRef:
        return cls(int(spec["job_id"]), int(spec["attempt"]), str(spec["lease_token"]))


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

    def acquire_jobs(self, queue: str, pilot_id: str, n_jobs: int = 1) -> Acquired:
        data = self._post(wire.ACQUIRE_JOBS,
                          {"queue": queue, "pilot_id": pilot_id, "n_jobs": n_jobs}) or {}
        return Acquired(jobs=list(data.get("jobs") or []), pending=int(data.get("pending") or 0))

    def update_job(
        self,
        ref: JobRef,
        state: str,
        *,
        metrics: dict[str, float | int] | None = None,
        exit_code: int | None = None,
        error_category: str = "",
        error_diag: str = "",
        outputs: list[dict[str, Any]] | None = None,
        cancel: threading.Event | None = None,
    ) -> str | None:
        """Send a heartbeat or a report; return the server's command (or None).

        Setting ``cancel`` stops the retries (``ServerUnavailable``)."""
        body = update_body(ref, state, metrics=metrics, exit_code=exit_code,
                           error_category=error_category, error_diag=error_diag, outputs=outputs)
        data = self._post(wire.UPDATE_JOB, body, cancel=cancel)
        return (data or {}).get("command")

    def update_jobs_bulk(self, updates: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Send many ``update_body`` dicts at once; one result per update, in order
        (``success``, ``command``; ``stale`` and ``message`` when refused)."""
        return list(self._post(wire.UPDATE_JOBS_BULK, {"updates": updates}) or [])

    def _post(
        self, path: str, body: dict[str, Any], *, cancel: threading.Event | None = None
    ) -> Any:
        """POST ``body``; return the envelope's ``data``, retrying what may pass later."""
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
    outputs: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The update_job request body of ``wire.py`` (also one item of a bulk update)."""
    if state not in wire.REPORTABLE_STATES:
        raise ValueError(f"a pilot cannot report state {state!r}")
    if error_category and error_category not in wire.ERROR_CATEGORIES:
        raise ValueError(f"unknown error category {error_category!r}")
    return {
        "job_id": ref.job_id, "attempt": ref.attempt, "lease_token": ref.lease_token,
        "state": state, "metrics": dict(metrics or {}), "exit_code": exit_code,
        "error_category": error_category, "error_diag": error_diag,
        "outputs": list(outputs or []),
    }


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
