"""The catalog's tables: the state of the world, and the only place it lives.

Sites, queues and storage endpoints (from the operators' TOML), datasets, files
and replicas (the truth in local mode, a cache of Rucio otherwise), tasks, jobs
with their files, data requests made of the DDM, the state history and the
inbound DDM events with their dedup keys. Migrations in ``migrations/`` build
exactly these tables; ``tests/test_migrations.py`` checks the two agree.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, validates
from sqlalchemy.types import TypeDecorator

from .names import check_name, check_scope


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware datetimes on every backend (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to the catalog; use datetime.now(UTC)")
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON, list[Any]: JSON}


# ---------------------------------------------------------------- topology
class Site(Base):
    __tablename__ = "site"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")


class StorageEndpoint(Base):
    """A place files live (Rucio's RSE): disk or tape, reached by a URL prefix."""

    __tablename__ = "storage_endpoint"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("site.id"))
    kind: Mapped[str] = mapped_column(String(8), default="disk")  # disk | tape
    url_prefix: Mapped[str] = mapped_column(String(1024))
    quota_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # tape only (the carousel's limits; None: PanDA's defaults, see carousel.config)
    staging_max_files: Mapped[int | None] = mapped_column(Integer, nullable=True)
    staging_max_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    staging_max_percent: Mapped[int | None] = mapped_column(Integer, nullable=True)
    staging_buffer: Mapped[str | None] = mapped_column(String(128), nullable=True)
    # the Rucio RSE this endpoint is, in Rucio mode; "" means the endpoint's own name
    rse: Mapped[str] = mapped_column(String(128), default="")
    blacklisted: Mapped[int] = mapped_column(Integer, default=0)  # the broker avoids it
    site: Mapped[Site] = relationship()

    @property
    def rse_name(self) -> str:
        return self.rse or self.name


class Queue(Base):
    """Where pilots run (PanDA's queue, CRIC's PanDA resource)."""

    __tablename__ = "queue"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("site.id"))
    status: Mapped[str] = mapped_column(String(16), default="online")  # states.QueueStatus
    cores: Mapped[int] = mapped_column(Integer, default=1)
    memory_mb: Mapped[int] = mapped_column(Integer, default=2000)
    max_walltime_s: Mapped[int] = mapped_column(Integer, default=86400)
    max_disk_mb: Mapped[int] = mapped_column(Integer, default=20000)
    max_running: Mapped[int] = mapped_column(Integer, default=1000)
    max_queued: Mapped[int] = mapped_column(Integer, default=1000)
    pilot_backend: Mapped[str] = mapped_column(String(32), default="local")
    backend_settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    read_endpoints: Mapped[list[Any]] = mapped_column(default=list)  # endpoint names, in order
    write_endpoint: Mapped[str] = mapped_column(String(128), default="")
    movers: Mapped[dict[str, Any]] = mapped_column(default=dict)  # activity -> [scheme, ...]
    direct_access: Mapped[int] = mapped_column(Integer, default=0)
    software: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)  # tags it offers
    last_pilot_at: Mapped[datetime | None] = mapped_column(nullable=True)  # a pilot asked
    site: Mapped[Site] = relationship()


class ConfigChange(Base):
    """Who changed the site configuration, when, and what the diff was."""

    __tablename__ = "config_change"
    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(128))
    source: Mapped[str] = mapped_column(String(1024))
    diff: Mapped[list[Any]] = mapped_column(default=list)


# ---------------------------------------------------------------- data
class Dataset(Base):
    __tablename__ = "dataset"
    __table_args__ = (UniqueConstraint("scope", "name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    scope: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(255))
    is_open: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    @property
    def did(self) -> str:
        return f"{self.scope}:{self.name}"

    @validates("scope", "name")
    def _grammar(self, key: str, value: str) -> str:  # names become paths: catalog/names.py
        return check_scope(value) if key == "scope" else check_name(value, "dataset name")


class File(Base):
    __tablename__ = "file"
    __table_args__ = (UniqueConstraint("scope", "name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    scope: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    adler32: Mapped[str] = mapped_column(String(8))
    guid: Mapped[str] = mapped_column(String(36))
    events: Mapped[int | None] = mapped_column(Integer, nullable=True)

    @validates("scope", "name")
    def _grammar(self, key: str, value: str) -> str:  # names become paths: catalog/names.py
        return check_scope(value) if key == "scope" else check_name(value, "file name")


class DatasetFile(Base):
    """A dataset's content (Rucio's attachment)."""

    __tablename__ = "dataset_file"
    dataset_id: Mapped[int] = mapped_column(ForeignKey("dataset.id"), primary_key=True)
    file_id: Mapped[int] = mapped_column(ForeignKey("file.id"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, default=0)


class Replica(Base):
    __tablename__ = "replica"
    __table_args__ = (UniqueConstraint("file_id", "endpoint_id"),
                      Index("ix_replica_endpoint_state", "endpoint_id", "state"))
    id: Mapped[int] = mapped_column(primary_key=True)
    file_id: Mapped[int] = mapped_column(ForeignKey("file.id"))
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("storage_endpoint.id"))
    state: Mapped[str] = mapped_column(String(16))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class DataRequest(Base):
    """What the bridge asked of the DDM: copy these files to that endpoint."""

    __tablename__ = "data_request"
    __table_args__ = (Index("ix_request_state", "state"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), default="replicate")  # replicate | stage
    name: Mapped[str] = mapped_column(String(255))  # the dispatch block, e.g. task_dis000042
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("storage_endpoint.id"))
    ddm: Mapped[str] = mapped_column(String(32), default="local")
    external_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    activity: Mapped[str] = mapped_column(String(64), default="Production Input")
    state: Mapped[str] = mapped_column(String(16))
    files_total: Mapped[int] = mapped_column(Integer, default=0)
    files_done: Mapped[int] = mapped_column(Integer, default=0)
    bytes_done: Mapped[int] = mapped_column(BigInteger, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str] = mapped_column(Text, default="")
    # stuck escalation (scheduler/stuck.py): how often it went a whole period without a
    # file arriving, and when files_done last grew (progress_files: its value then)
    stuck_count: Mapped[int] = mapped_column(Integer, default=0)
    progress_files: Mapped[int] = mapped_column(Integer, default=0)
    progress_at: Mapped[datetime | None] = mapped_column(nullable=True)
    acquired_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    acquired_until: Mapped[datetime | None] = mapped_column(nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class DataRequestFile(Base):
    __tablename__ = "data_request_file"
    request_id: Mapped[int] = mapped_column(ForeignKey("data_request.id"), primary_key=True)
    file_id: Mapped[int] = mapped_column(ForeignKey("file.id"), primary_key=True)
    done: Mapped[int] = mapped_column(Integer, default=0)
    # the last reason this file failed to arrive (what Rucio users ask for per file)
    error: Mapped[str] = mapped_column(Text, default="")
    failures: Mapped[int] = mapped_column(Integer, default=0)
    failed_at: Mapped[datetime | None] = mapped_column(nullable=True)


# ---------------------------------------------------------------- work
class Task(Base):
    __tablename__ = "task"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    owner: Mapped[str] = mapped_column(String(128))
    state: Mapped[str] = mapped_column(String(16))
    transformation: Mapped[str] = mapped_column(Text)
    input_datasets: Mapped[list[Any]] = mapped_column()
    output_dataset: Mapped[str] = mapped_column(String(255))
    log_dataset: Mapped[str] = mapped_column(String(255))
    split: Mapped[dict[str, Any]] = mapped_column()
    resources: Mapped[dict[str, Any]] = mapped_column()
    retry: Mapped[dict[str, Any]] = mapped_column()
    priority: Mapped[int] = mapped_column(Integer, default=500)
    share: Mapped[str] = mapped_column(String(64), default="production")
    error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Job(Base):
    """One attempt at one piece of a task. A retry is a new row (attempt + 1)."""

    __tablename__ = "job"
    __table_args__ = (
        Index("ix_job_task", "task_id", "job_index"),
        Index("ix_job_state", "state"),
        # the monitor's keyset pages and time windows (migration 0012)
        Index("ix_job_task_id", "task_id", "id"),
        Index("ix_job_queue_id", "queue_id", "id"),
        Index("ix_job_state_id", "state", "id"),
        Index("ix_job_ended_at", "ended_at"),
        Index("ix_job_queue_ended", "queue_id", "ended_at"),
        Index("ix_job_heartbeat_at", "heartbeat_at"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("task.id"))
    job_index: Mapped[int] = mapped_column(Integer)  # which piece of the task
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    retry_of: Mapped[int | None] = mapped_column(Integer, nullable=True)
    state: Mapped[str] = mapped_column(String(16))
    queue_id: Mapped[int | None] = mapped_column(ForeignKey("queue.id"), nullable=True)
    priority: Mapped[int] = mapped_column(Integer, default=500)
    cores: Mapped[int] = mapped_column(Integer, default=1)
    memory_mb: Mapped[int] = mapped_column(Integer, default=2000)
    walltime_s: Mapped[int] = mapped_column(Integer, default=3600)
    disk_mb: Mapped[int] = mapped_column(Integer, default=1000)
    spec: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)  # dispatch data
    pilot_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    lease_token: Mapped[str | None] = mapped_column(String(64), nullable=True)
    command: Mapped[str | None] = mapped_column(String(32), nullable=True)  # to its pilot
    # rebrokerage constraints for the broker: {"queue": name} or {"exclude": [names]}
    broker_hint: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # the broker's last word on a job it could not place: {"at", "queues": {name: why}}
    broker_reasons: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(nullable=True)
    state_changed_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(nullable=True)
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error_category: Mapped[str] = mapped_column(String(32), default="")
    error_diag: Mapped[str] = mapped_column(Text, default="")
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    files: Mapped[list[JobFile]] = relationship(back_populates="job", order_by="JobFile.id")


# the claim's order (priority DESC, id): rows come out of the index in it, unsorted
Index("ix_job_dispatch", Job.queue_id, Job.state, Job.priority.desc(), Job.id)


class JobFile(Base):
    """A job's input, output or log file. Outputs get their file_id on registration."""

    __tablename__ = "job_file"
    __table_args__ = (Index("ix_job_file_job", "job_id"),
                      Index("ix_job_file_request", "request_id"))
    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("job.id"))
    type: Mapped[str] = mapped_column(String(8))  # in | out | log
    scope: Mapped[str] = mapped_column(String(64))
    lfn: Mapped[str] = mapped_column(String(255))
    dataset: Mapped[str] = mapped_column(String(320))  # scope:name
    file_id: Mapped[int | None] = mapped_column(ForeignKey("file.id"), nullable=True)
    request_id: Mapped[int | None] = mapped_column(ForeignKey("data_request.id"), nullable=True)
    size: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    adler32: Mapped[str | None] = mapped_column(String(8), nullable=True)
    job: Mapped[Job] = relationship(back_populates="files")


# ---------------------------------------------------------------- carousel
class StagingRequest(Base):
    """The carousel's request: one task's dataset, from one tape endpoint to a disk buffer."""

    __tablename__ = "staging_request"
    __table_args__ = (Index("ix_staging_request_state", "state", "source_id"),
                      Index("ix_staging_request_task", "task_id"))
    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("task.id"))
    dataset: Mapped[str] = mapped_column(String(320))  # scope:name
    source_id: Mapped[int] = mapped_column(ForeignKey("storage_endpoint.id"))  # the tape
    destination_id: Mapped[int] = mapped_column(ForeignKey("storage_endpoint.id"))  # the buffer
    state: Mapped[str] = mapped_column(String(16))
    share: Mapped[str] = mapped_column(String(64), default="production")
    priority: Mapped[int] = mapped_column(Integer, default=500)
    files_total: Mapped[int] = mapped_column(Integer, default=0)
    files_staged: Mapped[int] = mapped_column(Integer, default=0)
    files_lost: Mapped[int] = mapped_column(Integer, default=0)
    bytes_total: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_staged: Mapped[int] = mapped_column(BigInteger, default=0)
    pinned_until: Mapped[datetime | None] = mapped_column(nullable=True)
    released_at: Mapped[datetime | None] = mapped_column(nullable=True)  # buffer let go
    error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class StagingFile(Base):
    """One file of a staging request; ``data_request_id`` is the DDM request recalling it."""

    __tablename__ = "staging_file"
    __table_args__ = (UniqueConstraint("request_id", "file_id"),
                      Index("ix_staging_file_state", "request_id", "state"))
    id: Mapped[int] = mapped_column(primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("staging_request.id"))
    file_id: Mapped[int] = mapped_column(ForeignKey("file.id"))
    state: Mapped[str] = mapped_column(String(16))
    size: Mapped[int] = mapped_column(BigInteger)
    position: Mapped[int] = mapped_column(Integer, default=0)  # in its dataset
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_try_at: Mapped[datetime | None] = mapped_column(nullable=True)
    data_request_id: Mapped[int | None] = mapped_column(ForeignKey("data_request.id"),
                                                        nullable=True)
    released_at: Mapped[datetime | None] = mapped_column(nullable=True)
    error: Mapped[str] = mapped_column(Text, default="")
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


# ---------------------------------------------------------------- logs
class StateHistory(Base):
    """Every state change of every job, task, request and replica."""

    __tablename__ = "state_history"
    __table_args__ = (Index("ix_history_entity", "entity", "entity_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    entity: Mapped[str] = mapped_column(String(16))
    entity_id: Mapped[int] = mapped_column(Integer)
    from_state: Mapped[str] = mapped_column(String(16))
    to_state: Mapped[str] = mapped_column(String(16))
    attempt: Mapped[int | None] = mapped_column(Integer, nullable=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str] = mapped_column(Text, default="")


class DDMEvent(Base):
    """An inbound data event (callback or poll finding), kept once by its dedup key."""

    __tablename__ = "ddm_event"
    id: Mapped[int] = mapped_column(primary_key=True)
    dedup_key: Mapped[str] = mapped_column(String(255), unique=True)
    source: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)


class DaemonLock(Base):
    """Which scheduler instance runs a daemon now: a lease, renewed on every run, and when
    the daemon last ran to the end without an error (``/readyz``, ``/metrics``)."""

    __tablename__ = "daemon_lock"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(255))
    acquired_until: Mapped[datetime] = mapped_column()
    last_success_at: Mapped[datetime | None] = mapped_column(nullable=True)
    last_duration_s: Mapped[float | None] = mapped_column(nullable=True)


# ---------------------------------------------------------------- trust
class SigningKey(Base):
    """A key the server signs tokens with: the newest unretired one signs, every
    unretired one verifies. Shared through the catalog by every server process."""

    __tablename__ = "signing_key"
    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    algorithm: Mapped[str] = mapped_column(String(8))
    private_pem: Mapped[str] = mapped_column(Text)
    public_pem: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    retired_at: Mapped[datetime | None] = mapped_column(nullable=True)


class TokenRevocation(Base):
    """A token revoked by its ``jti``: refused by every server process from then on."""

    __tablename__ = "token_revocation"
    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    revoked_at: Mapped[datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str] = mapped_column(Text, default="")
