"""The pilot protocol's constants: paths, commands, states and error categories.

Paths follow the PanDA server's new API (``/api/v1/<module>/<method>``) and every
reply is an envelope ``{"success": bool, "message": str, "data": ...}``. Which
job states a pilot may report is not written here: it is the catalog's table
``PILOT_REPORTABLE`` (``catalog/states.py``), the one the server checks against.
"""

from __future__ import annotations

from enum import StrEnum

from dawms.catalog.states import JOB_FINAL, PILOT_REPORTABLE

API = "/api/v1"
ACQUIRE_JOBS = f"{API}/pilot/acquire_jobs"
UPDATE_JOB = f"{API}/pilot/update_job"
UPDATE_JOBS_BULK = f"{API}/pilot/update_jobs_bulk"
GET_COMMAND = f"{API}/pilot/get_command"  # the cheap poll for a running job's command
PING = f"{API}/ping"

HTTP_STALE = 409  # the attempt or lease the pilot holds is not current


class Command(StrEnum):
    """What the server may tell a pilot about its job in a reply (PanDA's ``command``)."""

    KILL = "tobekilled"  # kill the payload, report ``failed``; the job ends ``cancelled``


# What a pilot may report: the catalog's table, as the strings on the wire.
REPORTABLE_STATES: tuple[str, ...] = tuple(sorted(s.value for s in PILOT_REPORTABLE))
FINAL_REPORT_STATES: tuple[str, ...] = tuple(sorted(s.value for s in PILOT_REPORTABLE
                                                    if s in JOB_FINAL))


class ErrorCategory(StrEnum):
    """Why a job failed, as the pilot classifies it (the server adds none of its own)."""

    PILOT = "pilot"  # the pilot itself went wrong (bad job description, a bug)
    STAGEIN = "stagein"  # no replica of an input could be copied and verified
    PAYLOAD = "payload"  # the payload exited non-zero or left outputs missing
    STAGEOUT = "stageout"  # an output or the log could not be stored
    LOST_HEARTBEAT = "lost_heartbeat"
    TIMEOUT = "timeout"  # the server gave up waiting (no pilot took it, no word from one)
    WALLTIME = "walltime"  # the payload ran past its walltime; the pilot killed it
    MEMORY = "memory"  # the payload's process tree went over the job's memory; killed
    KILLED = "killed"  # on the server's command, or the pilot was told to stop
    # set by the server, never reported: every replica of an input is bad or gone, so
    # another attempt would read the same bytes (no retry)
    BAD_DATA = "bad_data"


ERROR_CATEGORIES: tuple[str, ...] = tuple(c.value for c in ErrorCategory)


class BadReplicaReason(StrEnum):
    """Why the pilot gave up a replica during stage-in (one entry per replica tried)."""

    CHECKSUM = "checksum"  # the bytes' adler32 (or the storage's checksum) is not the catalog's
    SIZE = "size"  # the replica holds another number of bytes than the catalog says
    MISSING = "missing"  # the storage says the file is not there (or may not be read)
    UNREADABLE = "unreadable"  # the storage did not answer (an outage): not proof of damage


BAD_REPLICA_REASONS: tuple[str, ...] = tuple(r.value for r in BadReplicaReason)
# the reasons that prove a replica damaged: the server marks it ``bad``
DAMAGE_REASONS = frozenset({BadReplicaReason.CHECKSUM, BadReplicaReason.SIZE,
                            BadReplicaReason.MISSING})
