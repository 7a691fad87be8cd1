"""The state machines of dawms, as data.

Every entity with a life cycle (job, task, data request, replica) has its states
and its allowed transitions here, side by side, the way DIRAC's JobsStateMachine
keeps them. ``catalog.transition`` reads these tables and is the only code that
writes a ``state`` column; nothing else decides what may follow what.
"""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    """PanDA's job states (see notes/panda-reference.md)."""

    DEFINED = "defined"  # split from its task, not yet brokered
    WAITING = "waiting"  # held back (e.g. its queue is full); brokered again later
    THROTTLED = "throttled"  # held back by a share or priority cap
    ASSIGNED = "assigned"  # brokered to a queue; inputs are being moved there
    ACTIVATED = "activated"  # every input is on disk at its site; a pilot may take it
    SENT = "sent"  # claimed by a pilot, no word from it yet
    STARTING = "starting"  # the pilot is staging in
    RUNNING = "running"  # the payload runs
    HOLDING = "holding"  # payload done; outputs being registered
    TRANSFERRING = "transferring"  # outputs moving to their final destination
    FINISHED = "finished"
    FAILED = "failed"
    CLOSED = "closed"  # ended by the system before it ran (rebrokerage, task abort)
    CANCELLED = "cancelled"  # killed by a user


class TaskState(StrEnum):
    """JEDI's task states that dawms uses."""

    REGISTERED = "registered"  # submitted; inputs not yet resolved
    DEFINED = "defined"  # split into jobs
    STAGING = "staging"  # waiting for the carousel to bring inputs from tape
    READY = "ready"  # jobs brokered, none has run yet
    RUNNING = "running"
    PAUSED = "paused"
    THROTTLED = "throttled"
    DONE = "done"  # every job finished
    FINISHED = "finished"  # some jobs finished, the others failed for good
    FAILED = "failed"  # no job finished
    BROKEN = "broken"  # the task cannot be run as specified (bad spec, unknown dataset)
    ABORTED = "aborted"  # killed by its owner


class RequestState(StrEnum):
    """A data request the bridge made of the DDM (a Rucio rule, a local transfer)."""

    REQUESTED = "requested"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


class ReplicaState(StrEnum):
    """A file's copy at one storage endpoint (Rucio's replica states)."""

    COPYING = "copying"
    AVAILABLE = "available"
    UNAVAILABLE = "unavailable"
    BAD = "bad"


class QueueStatus(StrEnum):
    """What an operator sets on a queue in the sites file (CRIC's queue status)."""

    ONLINE = "online"  # brokered to and served
    BROKEROFF = "brokeroff"  # served, but the broker sends no new jobs
    TEST = "test"  # served (test jobs only), not brokered to
    OFFLINE = "offline"  # neither brokered to nor served


# Queues whose pilots may still take jobs.
QUEUE_SERVED = frozenset({QueueStatus.ONLINE, QueueStatus.BROKEROFF, QueueStatus.TEST})


class Entity(StrEnum):
    """The kinds of rows whose ``state`` column the transition path owns."""

    JOB = "job"
    TASK = "task"
    REQUEST = "data_request"
    REPLICA = "replica"


J = JobState
JOB_TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    J.DEFINED: frozenset({J.ASSIGNED, J.ACTIVATED, J.WAITING, J.THROTTLED, J.FAILED, J.CLOSED,
                          J.CANCELLED}),
    J.WAITING: frozenset({J.DEFINED, J.ASSIGNED, J.ACTIVATED, J.FAILED, J.CLOSED, J.CANCELLED}),
    J.THROTTLED: frozenset({J.DEFINED, J.ASSIGNED, J.ACTIVATED, J.CLOSED, J.CANCELLED}),
    J.ASSIGNED: frozenset({J.ACTIVATED, J.FAILED, J.CLOSED, J.CANCELLED}),
    J.ACTIVATED: frozenset({J.SENT, J.THROTTLED, J.FAILED, J.CLOSED, J.CANCELLED}),
    J.SENT: frozenset({J.STARTING, J.RUNNING, J.FAILED, J.CANCELLED}),
    J.STARTING: frozenset({J.RUNNING, J.FAILED, J.CANCELLED}),
    J.RUNNING: frozenset({J.HOLDING, J.TRANSFERRING, J.FINISHED, J.FAILED, J.CANCELLED}),
    J.HOLDING: frozenset({J.TRANSFERRING, J.FINISHED, J.FAILED, J.CANCELLED}),
    J.TRANSFERRING: frozenset({J.FINISHED, J.FAILED, J.CANCELLED}),
    J.FINISHED: frozenset(),
    J.FAILED: frozenset(),
    J.CLOSED: frozenset(),
    J.CANCELLED: frozenset(),
}

T = TaskState
TASK_TRANSITIONS: dict[TaskState, frozenset[TaskState]] = {
    T.REGISTERED: frozenset({T.DEFINED, T.BROKEN, T.ABORTED}),
    T.DEFINED: frozenset({T.STAGING, T.READY, T.RUNNING, T.PAUSED, T.DONE, T.FINISHED, T.FAILED,
                          T.ABORTED, T.BROKEN}),
    T.STAGING: frozenset({T.READY, T.PAUSED, T.FAILED, T.ABORTED}),
    T.READY: frozenset({T.RUNNING, T.PAUSED, T.THROTTLED, T.DONE, T.FINISHED, T.FAILED,
                        T.ABORTED}),
    T.RUNNING: frozenset({T.PAUSED, T.THROTTLED, T.DONE, T.FINISHED, T.FAILED, T.ABORTED}),
    T.PAUSED: frozenset({T.READY, T.RUNNING, T.ABORTED}),
    T.THROTTLED: frozenset({T.READY, T.RUNNING, T.PAUSED, T.ABORTED}),
    T.DONE: frozenset(),
    T.FINISHED: frozenset(),
    T.FAILED: frozenset(),
    T.BROKEN: frozenset(),
    T.ABORTED: frozenset(),
}

R = RequestState
REQUEST_TRANSITIONS: dict[RequestState, frozenset[RequestState]] = {
    R.REQUESTED: frozenset({R.DONE, R.FAILED, R.CANCELLED}),
    R.DONE: frozenset(),
    R.FAILED: frozenset(),
    R.CANCELLED: frozenset(),
}

P = ReplicaState
REPLICA_TRANSITIONS: dict[ReplicaState, frozenset[ReplicaState]] = {
    P.COPYING: frozenset({P.AVAILABLE, P.UNAVAILABLE, P.BAD}),
    P.AVAILABLE: frozenset({P.UNAVAILABLE, P.BAD}),
    P.UNAVAILABLE: frozenset({P.AVAILABLE, P.COPYING, P.BAD}),
    P.BAD: frozenset({P.COPYING}),  # a new transfer may repair a bad copy
}

MACHINES: dict[Entity, tuple[type[StrEnum], dict]] = {
    Entity.JOB: (JobState, JOB_TRANSITIONS),
    Entity.TASK: (TaskState, TASK_TRANSITIONS),
    Entity.REQUEST: (RequestState, REQUEST_TRANSITIONS),
    Entity.REPLICA: (ReplicaState, REPLICA_TRANSITIONS),
}

JOB_FINAL = frozenset(s for s, nxt in JOB_TRANSITIONS.items() if not nxt)
TASK_FINAL = frozenset(s for s, nxt in TASK_TRANSITIONS.items() if not nxt)
# Jobs a broker may still move: nothing of them runs anywhere yet.
JOB_QUEUED = frozenset({J.DEFINED, J.WAITING, J.THROTTLED, J.ASSIGNED, J.ACTIVATED})
# Jobs a pilot holds: they must heartbeat.
JOB_WITH_PILOT = frozenset({J.SENT, J.STARTING, J.RUNNING, J.HOLDING, J.TRANSFERRING})
# What a pilot may report (PanDA's rule); the server refuses anything else, and the
# pilot's wire records (``dawms.wire``) are built from this table.
PILOT_REPORTABLE = frozenset({J.STARTING, J.RUNNING, J.HOLDING, J.TRANSFERRING, J.FINISHED,
                              J.FAILED})
# How the server reaches a reported state from the job's current one: the steps it
# takes, each a transition of JOB_TRANSITIONS with its history row. Reporting the
# state the job is in is a heartbeat (no step); ``failed`` is one step from any state
# a pilot holds; a ``finished`` report registers the outputs before its last step.
# A (current, reported) pair missing here is refused as stale.
PILOT_REPORT_PATHS: dict[tuple[JobState, JobState], tuple[JobState, ...]] = {
    **{(s, s): () for s in JOB_WITH_PILOT & PILOT_REPORTABLE},
    **{(s, J.FAILED): (J.FAILED,) for s in JOB_WITH_PILOT},
    (J.SENT, J.STARTING): (J.STARTING,),
    (J.SENT, J.RUNNING): (J.RUNNING,),
    (J.STARTING, J.RUNNING): (J.RUNNING,),
    (J.RUNNING, J.HOLDING): (J.HOLDING,),
    (J.RUNNING, J.TRANSFERRING): (J.TRANSFERRING,),
    (J.SENT, J.FINISHED): (J.RUNNING, J.HOLDING, J.FINISHED),
    (J.STARTING, J.FINISHED): (J.RUNNING, J.HOLDING, J.FINISHED),
    (J.RUNNING, J.FINISHED): (J.HOLDING, J.FINISHED),
    (J.HOLDING, J.FINISHED): (J.FINISHED,),
    (J.TRANSFERRING, J.FINISHED): (J.FINISHED,),
}


def allowed(entity: Entity, src: str, dst: str) -> bool:
    """Whether the table of ``entity`` lets ``src`` move to ``dst``."""
    enum, table = MACHINES[entity]
    return enum(dst) in table[enum(src)]


def is_final(entity: Entity, state: str) -> bool:
    enum, table = MACHINES[entity]
    return not table[enum(state)]
