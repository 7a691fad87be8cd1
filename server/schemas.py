"""Request and reply bodies of the HTTP API (they make the OpenAPI document).

The pilot's bodies are ``dawms.wire`` records on the wire; the models here
describe the same fields with the same bounds for FastAPI and OpenAPI
(tests/test_wire.py checks, field by field, that they agree).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema

from dawms.catalog.names import MAX_NAME, MIN_NAME, NAME_PATTERN, check_name
from dawms.wire import BAD_REPLICA_REASONS, ERROR_CATEGORIES, REPORTABLE_STATES
from dawms.wire import job as wire_job
from dawms.wire import reports as wire_reports

# ids, attempts and sizes must fit the catalog's BIGINT (the widest integer column);
# strings are bounded by their columns (catalog/models.py)
INT64_MAX = 2**63 - 1
Id = Annotated[int, Field(ge=1, le=INT64_MAX)]


def _name(max_length: int, what: str) -> Any:
    """A string in the catalog's name grammar (catalog/names.py), as a field type whose
    OpenAPI schema carries the pattern and the bounds."""
    def check(value: str) -> str:
        if len(value) > max_length:
            raise ValueError(f"{what} is longer than {max_length} characters")
        return check_name(value, what)

    return Annotated[str, AfterValidator(check), WithJsonSchema(
        {"type": "string", "pattern": NAME_PATTERN, "minLength": MIN_NAME,
         "maxLength": max_length, "description": f"{what}: letters, digits, '._-'; starts "
                                                 "with a letter or digit; no '..'"})]


SourceName = _name(32, "source")
ExternalId = _name(64, "external id")


class Envelope(BaseModel):
    """Every reply, as the PanDA server's new API: success, message, data."""

    success: bool
    message: str = ""
    data: Any = None


class _PilotBody(BaseModel):
    """A pilot's body: as strict as its ``dawms.wire`` record (no unknown fields)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class AcquireJobs(_PilotBody):
    """``wire.AcquireRequest``."""

    queue: str = Field(min_length=1, max_length=128, description="the queue the pilot serves")
    pilot_id: str = Field(min_length=1, max_length=255,
                          description="who asks: host, pid, a unique id")
    n_jobs: int = Field(1, ge=1, le=wire_reports.ACQUIRE_MAX)
    max_walltime_s: int | float = Field(
        0.0, ge=0, le=2**31 - 1, allow_inf_nan=False,
        description="only jobs whose walltime fits in what is left of the pilot's lifetime "
                    "(0: any job)")


class OutputFile(_PilotBody):
    """``wire.OutputReport``."""

    lfn: str = Field(min_length=MIN_NAME, max_length=MAX_NAME, pattern=NAME_PATTERN,
                     description="a file name of the catalog's grammar (catalog/names.py)")
    type: Literal["out", "log"] = "out"
    size: int = Field(ge=0, le=INT64_MAX)
    adler32: str = Field(pattern=f"^{wire_job.ADLER32}$")


class BadReplica(_PilotBody):
    """``wire.BadReplicaReport``."""

    lfn: str = Field(min_length=MIN_NAME, max_length=MAX_NAME, pattern=NAME_PATTERN,
                     description="the input's file name")
    url: str = Field(min_length=1, max_length=wire_job.URL_MAX,
                     description="the replica URL of the job spec")
    reason: Literal[BAD_REPLICA_REASONS]  # type: ignore[valid-type]
    detail: str = Field("", max_length=500, description="what the mover said")


MetricName = Annotated[str, Field(min_length=1, max_length=64)]
# a number (an int stays an int, as the record keeps it)
Metric = Annotated[int | float, Field(ge=-wire_reports.METRIC_MAX, le=wire_reports.METRIC_MAX,
                                      allow_inf_nan=False)]


class JobUpdate(_PilotBody):
    """``wire.JobReport``."""

    job_id: Id
    attempt: int = Field(ge=1, le=2**31 - 1)
    lease_token: str = Field(min_length=1, max_length=wire_reports.LEASE_MAX)
    state: Literal[REPORTABLE_STATES]  # type: ignore[valid-type]
    metrics: dict[MetricName, Metric] = Field(default_factory=dict,
                                              max_length=wire_reports.METRICS_MAX)
    exit_code: int | None = Field(None, ge=-(2**31), le=2**31 - 1)
    error_category: Literal[("", *ERROR_CATEGORIES)] = ""  # type: ignore[valid-type]
    error_diag: str = Field("", max_length=wire_reports.DIAG_MAX)
    outputs: list[OutputFile] = Field(default_factory=list,
                                      max_length=wire_job.FILES_MAX + 1)
    bad_replicas: list[BadReplica] = Field(default_factory=list,
                                           max_length=wire_reports.BAD_REPLICAS_MAX)


class JobUpdates(_PilotBody):
    """``wire.BulkUpdate``."""

    updates: list[JobUpdate] = Field(max_length=wire_reports.BULK_MAX)


class DDMEventIn(BaseModel):
    """A DDM callback: a data request ended (PanDA's datasetlock_ok, rule_ok...)."""

    source: SourceName = "http"
    dedup_key: str = Field(max_length=255, description="the same event sent twice is kept once")
    outcome: str = Field(max_length=16, description="done | failed | cancelled")
    request_id: Id | None = None
    external_id: ExternalId | None = None
    error: str = Field("", max_length=4000)


class DDMEventsIn(BaseModel):
    """A bulk of DDM events (Rucio's hermes posts up to 1,000 at a time)."""

    events: list[DDMEventIn] = Field(min_length=1, max_length=1000)


class KillJobs(BaseModel):
    job_ids: list[Id] = Field(min_length=1, max_length=100000)
    reason: str = Field("", max_length=2000)


class KillTask(BaseModel):
    task_id: Id
    reason: str = Field("", max_length=2000)


class ReassignJobs(BaseModel):
    job_ids: list[Id] = Field(min_length=1, max_length=100000)
    queue: str | None = Field(None, max_length=128,
                              description="send them here; default: anywhere but where they are")


class ReassignTask(BaseModel):
    task_id: Id
    queue: str | None = Field(None, max_length=128)
