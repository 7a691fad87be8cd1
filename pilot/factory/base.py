"""The pilot-factory interface: how dawms puts pilots onto a queue's resources.

A factory (PanDA's Harvester plays this role) submits ``n`` pilots for a queue
to some resource -- local processes, Slurm, HTCondor, Kubernetes -- and can
later poll or cancel each through its handle. Every backend starts the same
command, ``python -m dawms.pilot --server ... --queue ...``; ``pilot_argv``
builds it so the options mean the same everywhere.
"""

from __future__ import annotations

import enum
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar


class PilotStatus(enum.StrEnum):
    PENDING = "pending"  # submitted, not started by the resource yet
    RUNNING = "running"
    DONE = "done"  # exited 0: ran out of work, hit max-jobs or its lifetime
    FAILED = "failed"  # exited non-zero (server unreachable, crashed, killed)
    CANCELLED = "cancelled"  # stopped through cancel()
    UNKNOWN = "unknown"  # the backend no longer knows the pilot


@dataclass(frozen=True)
class PilotHandle:
    """What identifies a submitted pilot to its factory."""

    backend: str
    id: str  # backend id: a pid, a Slurm job id, a pod name...
    pilot_id: str  # the id the pilot gives the server
    log_path: Path | None = None


class PilotFactory(ABC):
    """Submits, polls and cancels pilots on one kind of resource."""

    name: ClassVar[str]

    @abstractmethod
    def submit(
        self, server_url: str, queue: str, n: int, workdir: Path, **opts: Any
    ) -> list[PilotHandle]:
        """Start ``n`` pilots for ``queue``; ``opts`` are ``pilot_argv`` options
        and backend settings. Returns one handle per pilot."""

    @abstractmethod
    def poll(self, handle: PilotHandle) -> PilotStatus:
        """The pilot's status now."""

    @abstractmethod
    def cancel(self, handle: PilotHandle) -> None:
        """Stop the pilot (it kills its payload and reports the job failed)."""


def pilot_argv(
    server_url: str,
    queue: str,
    workdir: Path,
    *,
    pilot_id: str | None = None,
    max_jobs: int | None = None,
    idle_timeout: float | None = None,
    poll_interval: float | None = None,
    lifetime: float | None = None,
    kill_grace: float | None = None,
    python: str = sys.executable,
) -> list[str]:
    """The command line of one pilot."""
    argv = [python, "-m", "dawms.pilot", "--server", server_url, "--queue", queue,
            "--workdir", str(workdir)]
    optional = {"--pilot-id": pilot_id, "--max-jobs": max_jobs, "--idle-timeout": idle_timeout,
                "--poll-interval": poll_interval, "--lifetime": lifetime,
                "--kill-grace": kill_grace}
    for flag, value in optional.items():
        if value is not None:
            argv += [flag, str(value)]
    return argv
