"""What a pilot sends and what it gets back: acquire, update_job, bulk updates.

Every report is fenced by ``(job_id, attempt, lease_token)``: the server refuses
a stale one with HTTP 409 (``protocol.HTTP_STALE``) and changes nothing. A
heartbeat repeats the job's current state (``starting`` while the pilot stages
in, ``running`` after) with fresh metrics; the final report (``finished`` or
``failed``) carries the outputs and the log with their size and adler32. The
reply to an update may carry a ``Command``.
"""

from __future__ import annotations

from dataclasses import dataclass

from .fields import INT32_MAX, INT64_MAX, Record, bounded
from .job import ADLER32, FILES_MAX, URL_MAX, JobSpec
from .names import MAX_NAME, MIN_NAME, NAME_PATTERN
from .protocol import BAD_REPLICA_REASONS, ERROR_CATEGORIES, REPORTABLE_STATES, Command

BULK_MAX = 1000  # updates in one update_jobs_bulk
ACQUIRE_MAX = 100  # jobs in one acquire_jobs
METRICS_MAX = 64  # entries of a report's metrics
METRIC_MAX = 1e18  # the magnitude of one metric (exact as a float and as a BIGINT)
DIAG_MAX = 4000  # the catalog keeps this much of an error diagnostic
LEASE_MAX = 64
BAD_REPLICAS_MAX = 1000  # replicas given up in one report


@dataclass(frozen=True, kw_only=True)
class AcquireRequest(Record):
    """acquire_jobs: a pilot of ``queue`` asks for up to ``n_jobs`` jobs."""

    WHAT = "acquire request"

    queue: str = bounded(min_length=1, max_length=128, doc="the queue the pilot serves")
    pilot_id: str = bounded(min_length=1, max_length=255,
                            doc="who asks: host, pid, a unique id")
    n_jobs: int = bounded(1, ge=1, le=ACQUIRE_MAX)
    max_walltime_s: float = bounded(0.0, ge=0, le=INT32_MAX,
                                    doc="only jobs whose walltime fits in what is left of "
                                        "the pilot's lifetime (0: any job)")


@dataclass(frozen=True, kw_only=True)
class AcquireReply(Record):
    """The jobs claimed for the pilot, and how many of the queue are not runnable yet."""

    WHAT = "acquire reply"

    jobs: list[JobSpec] = bounded(default_factory=list, max_length=ACQUIRE_MAX)
    pending: int = bounded(0, ge=0, le=INT64_MAX)
    command_poll_s: float = bounded(0.0, ge=0, le=86_400,
                                    doc="how often to ask get_command while a job runs "
                                        "(0: only the heartbeat carries commands)")


@dataclass(frozen=True, kw_only=True)
class CommandQuery(Record):
    """get_command: is there a command for this attempt? (The reply is an ``UpdateReply``.)"""

    WHAT = "command query"

    job_id: int = bounded(ge=1, le=INT64_MAX)
    attempt: int = bounded(ge=1, le=INT32_MAX)
    lease_token: str = bounded(min_length=1, max_length=LEASE_MAX)


@dataclass(frozen=True, kw_only=True)
class OutputReport(Record):
    """One output or the log as the pilot stored it: what the server registers."""

    WHAT = "output"

    lfn: str = bounded(min_length=MIN_NAME, max_length=MAX_NAME, pattern=NAME_PATTERN,
                       doc="a file name of the catalog's grammar")
    type: str = bounded("out", choices=("out", "log"))
    size: int = bounded(ge=0, le=INT64_MAX)
    adler32: str = bounded(pattern=ADLER32)


@dataclass(frozen=True, kw_only=True)
class BadReplicaReport(Record):
    """A replica the pilot gave up during stage-in, and why: the server marks a damaged
    one ``bad`` (only a URL its job spec offered for that input counts)."""

    WHAT = "bad replica"

    lfn: str = bounded(min_length=MIN_NAME, max_length=MAX_NAME, pattern=NAME_PATTERN,
                       doc="the input's file name")
    url: str = bounded(min_length=1, max_length=URL_MAX, doc="the replica URL of the job spec")
    reason: str = bounded(choices=BAD_REPLICA_REASONS)
    detail: str = bounded("", max_length=500, doc="what the mover said")


@dataclass(frozen=True, kw_only=True)
class JobReport(Record):
    """update_job: a heartbeat or a state report of one job attempt."""

    WHAT = "job report"

    job_id: int = bounded(ge=1, le=INT64_MAX)
    attempt: int = bounded(ge=1, le=INT32_MAX)
    lease_token: str = bounded(min_length=1, max_length=LEASE_MAX)
    state: str = bounded(choices=REPORTABLE_STATES)
    metrics: dict[str, float] = bounded(default_factory=dict, max_length=METRICS_MAX,
                                        item={"ge": -METRIC_MAX, "le": METRIC_MAX})
    exit_code: int | None = bounded(None, ge=-(2**31), le=INT32_MAX)
    error_category: str = bounded("", choices=("", *ERROR_CATEGORIES))
    error_diag: str = bounded("", max_length=DIAG_MAX)
    outputs: list[OutputReport] = bounded(default_factory=list, max_length=FILES_MAX + 1)
    bad_replicas: list[BadReplicaReport] = bounded(default_factory=list,
                                                   max_length=BAD_REPLICAS_MAX)


@dataclass(frozen=True, kw_only=True)
class UpdateReply(Record):
    """The reply to update_job: a command for the pilot, or none."""

    WHAT = "update reply"

    command: str | None = bounded(None, choices=tuple(c.value for c in Command))


@dataclass(frozen=True, kw_only=True)
class BulkUpdate(Record):
    """update_jobs_bulk: many reports at once; each is applied or refused on its own."""

    WHAT = "bulk update"

    updates: list[JobReport] = bounded(max_length=BULK_MAX)


@dataclass(frozen=True, kw_only=True)
class BulkResult(Record):
    """The answer for one report of a bulk update, in the order they were sent."""

    WHAT = "bulk result"

    job_id: int = bounded(ge=1, le=INT64_MAX)
    success: bool = bounded()
    command: str | None = bounded(None, choices=tuple(c.value for c in Command))
    message: str = bounded("", max_length=DIAG_MAX)
    stale: bool = bounded(False)
