"""The job description a pilot gets: PanDA's job spec as a typed record.

The server builds it once when a job is activated (``scheduler/dispatch.py``)
and stores ``JobSpec.to_dict()`` on the job row; claiming the job fills in the
fence (``attempt``, ``lease_token``); the pilot parses what it receives with
``JobSpec.from_dict`` and refuses a malformed one. Inputs list replica URLs in
the order the server prefers; outputs and the log each have one destination.
``endpoints`` maps every storage endpoint those URLs point into to its URL
prefix: the pilot reads and writes nothing outside them.
"""

from __future__ import annotations

from dataclasses import dataclass

from .fields import INT32_MAX, INT64_MAX, Record, bounded

NAME_MAX = 255  # scope, file and dataset names (the catalog's columns)
DID_MAX = 2 * NAME_MAX + 1  # "scope:name"
URL_MAX = 4096
URLS_MAX = 100  # replicas offered for one input
FILES_MAX = 10_000  # inputs (or outputs) of one job
SCHEMES_MAX = 16
ENDPOINTS_MAX = 256  # storage endpoints one spec names
ENDPOINT_NAME_MAX = 128  # the catalog's storage_endpoint.name
ADLER32 = r"[0-9a-fA-F]{8}"
URL_PREFIX = r"[A-Za-z][A-Za-z0-9+.-]*://\S+"  # scheme://..., no white space


@dataclass(frozen=True, kw_only=True)
class InputFile(Record):
    """One input: what to fetch and how to verify it."""

    WHAT = "input"

    scope: str = bounded(min_length=1, max_length=NAME_MAX)
    lfn: str = bounded(min_length=1, max_length=NAME_MAX)
    size: int = bounded(ge=0, le=INT64_MAX)
    adler32: str = bounded(pattern=ADLER32)
    guid: str = bounded("", max_length=36)
    dataset: str = bounded("", max_length=DID_MAX)
    urls: list[str] = bounded(default_factory=list, max_length=URLS_MAX,
                              item={"min_length": 1, "max_length": URL_MAX})


@dataclass(frozen=True, kw_only=True)
class OutputSpec(Record):
    """One output (or the log): its name, its dataset and where to put it."""

    WHAT = "output"

    scope: str = bounded(min_length=1, max_length=NAME_MAX)
    lfn: str = bounded(min_length=1, max_length=NAME_MAX)
    dataset: str = bounded(min_length=1, max_length=DID_MAX)
    url: str = bounded(min_length=1, max_length=URL_MAX)


_SCHEMES = {"max_length": SCHEMES_MAX, "item": {"min_length": 1, "max_length": 32}}


@dataclass(frozen=True, kw_only=True)
class Movers(Record):
    """The URL schemes the queue may use per activity, in order of preference.

    An empty ``log`` falls back to ``write``; an empty ``read`` allows every scheme."""

    WHAT = "movers"

    read: list[str] = bounded(default_factory=list, **_SCHEMES)
    write: list[str] = bounded(default_factory=list, **_SCHEMES)
    log: list[str] = bounded(default_factory=list, **_SCHEMES)

    @classmethod
    def of_queue(cls, movers: dict | None) -> Movers:
        """From a queue's ``movers`` setting (activity -> schemes); default ``file`` only."""
        movers = movers or {"read": ["file"], "write": ["file"]}
        return cls.from_dict({k: movers[k] for k in ("read", "write", "log") if k in movers})

    def for_log(self) -> list[str]:
        return self.log or self.write


@dataclass(frozen=True, kw_only=True)
class JobSpec(Record):
    """Everything a pilot needs to run one attempt of a job."""

    WHAT = "job spec"

    job_id: int = bounded(ge=1, le=INT64_MAX)
    attempt: int = bounded(ge=1, le=INT32_MAX)
    lease_token: str = bounded("", max_length=64, doc="set when the job is claimed")
    task_id: int = bounded(ge=1, le=INT64_MAX)
    job_name: str = bounded(max_length=NAME_MAX)
    transformation: str = bounded(min_length=1, max_length=16_384)
    cores: int = bounded(1, ge=1, le=4096)
    memory_mb: int = bounded(ge=0, le=INT32_MAX)
    walltime_s: float = bounded(ge=0, le=INT32_MAX, doc="0: no limit")
    disk_mb: int = bounded(0, ge=0, le=INT32_MAX)
    heartbeat_s: float = bounded(ge=0.01, le=86_400)
    queue: str = bounded("", max_length=128)
    endpoint_out: str = bounded("", max_length=ENDPOINT_NAME_MAX)
    inputs: list[InputFile] = bounded(default_factory=list, max_length=FILES_MAX)
    outputs: list[OutputSpec] = bounded(default_factory=list, max_length=FILES_MAX)
    log: OutputSpec | None = bounded(None)
    movers: Movers = bounded(default_factory=Movers)
    direct_access: bool = bounded(False, doc="the queue reads inputs in place: the payload "
                                             "gets each input's URL, not a local copy")
    endpoints: dict[str, str] = bounded(
        default_factory=dict, max_length=ENDPOINTS_MAX, key_max_length=ENDPOINT_NAME_MAX,
        item={"max_length": URL_MAX, "pattern": URL_PREFIX},
        doc="endpoint name -> URL prefix, for every endpoint the URLs point into")

    def claimed(self, attempt: int, lease_token: str) -> JobSpec:
        """This spec for one claim of the job: its attempt and lease."""
        from dataclasses import replace

        return replace(self, attempt=attempt, lease_token=lease_token)
