"""The pilot protocol as typed records: what the server and the pilot exchange.

The one package of ours that both ends import. It is standard library only
(dataclasses; the pilot installs with fsspec and httpx, no pydantic) and
imports nothing of ours but two standard-library tables of the catalog:
``dawms.catalog.states`` (what a pilot may report) and ``dawms.catalog.names``
(the name grammar, which ``names`` hands to the pilot). ``protocol`` holds the
paths, commands and error categories, ``job`` the job spec, ``reports`` the
acquire and update bodies and replies, ``command`` the payload command built per
argument from the spec's transformation, ``fields`` the strict
``from_dict``/``to_dict`` the records share.
"""

from .fields import Record, WireError
from .job import InputFile, JobSpec, Movers, OutputSpec
from .protocol import (
    ACQUIRE_JOBS,
    API,
    BAD_REPLICA_REASONS,
    DAMAGE_REASONS,
    ERROR_CATEGORIES,
    FINAL_REPORT_STATES,
    GET_COMMAND,
    HTTP_STALE,
    PING,
    REPORTABLE_STATES,
    UPDATE_JOB,
    UPDATE_JOBS_BULK,
    BadReplicaReason,
    Command,
    ErrorCategory,
)
from .reports import (
    AcquireReply,
    AcquireRequest,
    BadReplicaReport,
    BulkResult,
    BulkUpdate,
    CommandQuery,
    JobReport,
    OutputReport,
    UpdateReply,
)

__all__ = [
    "ACQUIRE_JOBS", "API", "BAD_REPLICA_REASONS", "DAMAGE_REASONS", "ERROR_CATEGORIES",
    "FINAL_REPORT_STATES", "GET_COMMAND", "HTTP_STALE", "PING", "REPORTABLE_STATES", "UPDATE_JOB",
    "UPDATE_JOBS_BULK", "AcquireReply", "AcquireRequest", "BadReplicaReason",
    "BadReplicaReport", "BulkResult", "BulkUpdate", "Command", "CommandQuery", "ErrorCategory",
    "InputFile", "JobReport", "JobSpec", "Movers", "OutputReport", "OutputSpec", "Record",
    "UpdateReply", "WireError",
]
