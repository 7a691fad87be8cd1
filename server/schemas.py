"""Request and reply bodies of the HTTP API (they make the OpenAPI document)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class Envelope(BaseModel):
    """Every reply, as the PanDA server's new API: success, message, data."""

    success: bool
    message: str = ""
    data: Any = None


class AcquireJobs(BaseModel):
    queue: str = Field(description="the queue the pilot serves")
    pilot_id: str = Field(description="who asks: host, pid, a unique id")
    n_jobs: int = Field(1, ge=1, le=100)


class OutputFile(BaseModel):
    lfn: str
    type: str = "out"
    size: int = Field(ge=0)
    adler32: str = Field(pattern=r"^[0-9a-fA-F]{8}$")


class JobUpdate(BaseModel):
    job_id: int
    attempt: int
    lease_token: str
    state: str
    metrics: dict[str, Any] = Field(default_factory=dict)
    exit_code: int | None = None
    error_category: str = ""
    error_diag: str = ""
    outputs: list[OutputFile] = Field(default_factory=list)


class JobUpdates(BaseModel):
    updates: list[JobUpdate] = Field(max_length=1000)


class DDMEventIn(BaseModel):
    """A DDM callback: a data request ended (PanDA's datasetlock_ok, rule_ok...)."""

    source: str = Field("http", max_length=32)
    dedup_key: str = Field(max_length=255, description="the same event sent twice is kept once")
    outcome: str = Field(description="done | failed | cancelled")
    request_id: int | None = None
    external_id: str | None = None
    error: str = ""


class KillJobs(BaseModel):
    job_ids: list[int] = Field(min_length=1, max_length=100000)
    reason: str = ""


class KillTask(BaseModel):
    task_id: int
    reason: str = ""


class ReassignJobs(BaseModel):
    job_ids: list[int] = Field(min_length=1, max_length=100000)
    queue: str | None = Field(None, description="send them here; default: anywhere but "
                                                "where they are")


class ReassignTask(BaseModel):
    task_id: int
    queue: str | None = None
