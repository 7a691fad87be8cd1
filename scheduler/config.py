"""The scheduler's knobs, with PanDA's defaults (notes/panda-reference.md)."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields


@dataclass(frozen=True)
class SchedulerConfig:
    heartbeat_s: int = 1800  # how often pilots heartbeat (PanDA: 30 min)
    command_poll_s: float = 20.0  # how often a running pilot asks get_command (a kill < 1 min)
    heartbeat_timeout_s: int = 7200  # running with no heartbeat -> failed (lost heartbeat)
    sent_timeout_s: int = 1800  # sent with no word from the pilot -> failed
    waiting_timeout_s: int = 14400  # no queue could take it (PanDA: defined 4 h)
    assigned_timeout_s: int = 43200  # its inputs did not arrive (PanDA: 12 h)
    activated_timeout_s: int = 172800  # no pilot took it (PanDA: 2 d)
    # a data request with no file arriving for stuck_after_s gets a stuck count; at
    # stuck_max it is cancelled and its jobs rebrokered, a job already moved
    # stuck_moves_max times for this fails (ddm_stuck) instead (scheduler/stuck.py)
    stuck_after_s: int = 7200
    stuck_max: int = 3
    stuck_moves_max: int = 1
    refiner_bunch: int = 20  # tasks refined per run
    broker_bunch: int = 500  # jobs brokered per run
    activator_bunch: int = 2000  # assigned jobs looked at per run
    default_max_attempts: int = 3
    broker_top_n: int = 3  # the broker picks among this many best queues...
    broker_spread: float = 0.2  # ...whose weight is within this fraction of the best
    pilot_seen_s: int = 0  # > 0: only queues a pilot asked within this many s get jobs
    rebroker_after_s: int = 21600  # activated this long with no pilot: go elsewhere (6 h)
    interval_s: float = 30.0  # periodic safety net for every daemon

    @classmethod
    def from_env(cls, **overrides: float) -> SchedulerConfig:
        """Read ``DAWMS_<FIELD>`` (e.g. DAWMS_HEARTBEAT_TIMEOUT_S) over the defaults."""
        values: dict[str, float] = {}
        for f in fields(cls):
            env = os.environ.get(f"DAWMS_{f.name.upper()}")
            if env is not None:
                try:
                    values[f.name] = type(f.default)(float(env))
                except ValueError:
                    raise ValueError(f"DAWMS_{f.name.upper()}={env!r} is not a number") from None
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]
