"""Request and reply bodies of the HTTP API (they make the OpenAPI document)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, Field, WithJsonSchema

from dawms.catalog.names import MAX_NAME, MIN_NAME, NAME_PATTERN, check_name

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


FileName = _name(MAX_NAME, "file name")
SourceName = _name(32, "source")
ExternalId = _name(64, "external id")


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
    lfn: FileName
    type: str = Field("out", max_length=8)
    size: int = Field(ge=0, le=INT64_MAX)
    adler32: str = Field(pattern=r"^[0-9a-fA-F]{8}$")


class JobUpdate(BaseModel):
    job_id: Id
    attempt: Id
    lease_token: str = Field(max_length=64)
    state: str = Field(max_length=16)
    metrics: dict[str, Any] = Field(default_factory=dict)
    exit_code: int | None = Field(None, ge=-(2**31), le=2**31 - 1)
    error_category: str = Field("", max_length=32)
    error_diag: str = ""
    outputs: list[OutputFile] = Field(default_factory=list)


class JobUpdates(BaseModel):
    updates: list[JobUpdate] = Field(max_length=1000)


class DDMEventIn(BaseModel):
    """A DDM callback: a data request ended (PanDA's datasetlock_ok, rule_ok...)."""

    source: SourceName = "http"
    dedup_key: str = Field(max_length=255, description="the same event sent twice is kept once")
    outcome: str = Field(max_length=16, description="done | failed | cancelled")
    request_id: Id | None = None
    external_id: ExternalId | None = None
    error: str = ""


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
