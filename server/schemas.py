"""Request and reply bodies of the HTTP API (they make the OpenAPI document)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field

# ids, attempts and sizes must fit the catalog's BIGINT (the widest integer column);
# strings are bounded by their columns (catalog/models.py)
INT64_MAX = 2**63 - 1
Id = Annotated[int, Field(ge=1, le=INT64_MAX)]
# pilot metrics: a flat, bounded dict of numbers (cpu, wall, max RSS, bytes) or short texts
MetricName = Annotated[str, Field(min_length=1, max_length=64)]
MetricValue = (Annotated[int, Field(ge=-INT64_MAX, le=INT64_MAX)]
               | Annotated[float, Field(allow_inf_nan=False)] | bool
               | Annotated[str, Field(max_length=256)] | None)


class Envelope(BaseModel):
    """Every reply, as the PanDA server's new API: success, message, data."""

    success: bool
    message: str = ""
    data: Any = None


class AcquireJobs(BaseModel):
    queue: str = Field(max_length=128, description="the queue the pilot serves")
    pilot_id: str = Field(max_length=255, description="who asks: host, pid, a unique id")
    n_jobs: int = Field(1, ge=1, le=100)


class OutputFile(BaseModel):
    lfn: str = Field(max_length=255)
    type: str = Field("out", max_length=8)
    size: int = Field(ge=0, le=INT64_MAX)
    adler32: str = Field(pattern=r"^[0-9a-fA-F]{8}$")


class JobUpdate(BaseModel):
    job_id: Id
    attempt: Id
    lease_token: str = Field(max_length=64)
    state: str = Field(max_length=16)
    metrics: dict[MetricName, MetricValue] = Field(default_factory=dict, max_length=64)
    exit_code: int | None = Field(None, ge=-(2**31), le=2**31 - 1)
    error_category: str = Field("", max_length=32)
    error_diag: str = Field("", max_length=4000)
    outputs: list[OutputFile] = Field(default_factory=list, max_length=1000)


class JobUpdates(BaseModel):
    updates: list[JobUpdate] = Field(max_length=1000)


class DDMEventIn(BaseModel):
    """A DDM callback: a data request ended (PanDA's datasetlock_ok, rule_ok...)."""

    source: str = Field("http", max_length=32)
    dedup_key: str = Field(max_length=255, description="the same event sent twice is kept once")
    outcome: str = Field(max_length=16, description="done | failed | cancelled")
    request_id: Id | None = None
    external_id: str | None = Field(None, max_length=64)
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
