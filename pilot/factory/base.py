"""The pilot-factory interface: how dawms puts pilots onto a queue's resources.

A factory (PanDA's Harvester plays this role) submits ``n`` pilots for a queue
to some resource -- local processes, Slurm, HTCondor, Kubernetes -- and can
later poll, cancel and clean up each through its handle (Harvester's submitter,
monitor, sweeper). Every backend starts the same command, ``python -m
dawms.pilot --server ... --queue ...``; ``pilot_argv`` builds it, one argument
per option, so the options mean the same everywhere. ``check_submit`` holds the
limits every backend applies before it starts anything. The conformance suite
every backend passes is ``tests/pilot/test_factory_conformance.py``.
"""

from __future__ import annotations

import enum
import os
import sys
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar


class PilotStatus(enum.StrEnum):
    PENDING = "pending"  # submitted, not started by the resource yet
    RUNNING = "running"
    DONE = "done"  # exited 0: ran out of work, hit max-jobs or its lifetime
    FAILED = "failed"  # exited non-zero (server unreachable, crashed, killed)
    CANCELLED = "cancelled"  # stopped through cancel()
    UNKNOWN = "unknown"  # the backend does not know the pilot (never started, cleaned up)


PILOT_ENDED = frozenset({PilotStatus.DONE, PilotStatus.FAILED, PilotStatus.CANCELLED,
                         PilotStatus.UNKNOWN})
MAX_PER_SUBMIT = 1000  # pilots one submit may start
QUEUE_NAME_MAX = 128  # the catalog's queue name column
TOKEN_ENVS = ("DAWMS_TOKEN", "DAWMS_PILOT_TOKEN")  # what dawms.pilot.main reads a token from


class SubmitError(ValueError):
    """A submit was refused before anything was started."""


@dataclass(frozen=True)
class PilotHandle:
    """What identifies a submitted pilot to its factory."""

    backend: str
    id: str  # backend id: a pid, a Slurm job id, a pod name...
    pilot_id: str  # the id the pilot gives the server
    log_path: Path | None = None


class PilotFactory(ABC):
    """Submits, polls, cancels and cleans up pilots on one kind of resource.

    Handles of another backend are refused (``ValueError``); a handle this
    factory does not know (never submitted here, or cleaned up) polls
    ``UNKNOWN`` and cancelling it changes nothing."""

    name: ClassVar[str]
    # the keys of a queue's ``backend_settings`` this backend takes (besides the
    # pilot options), passed to ``submit`` as keyword arguments
    settings_keys: ClassVar[frozenset[str]] = frozenset()
    max_per_submit: int = MAX_PER_SUBMIT  # an operator (or a test) may lower it

    @abstractmethod
    def submit(
        self, server_url: str, queue: str, n: int, workdir: Path, **opts: Any
    ) -> list[PilotHandle]:
        """Start ``n`` pilots for ``queue``; ``opts`` are ``pilot_argv`` options
        and backend settings. Returns one handle per pilot; ``SubmitError`` (and
        nothing started) when ``check_submit`` refuses."""

    @abstractmethod
    def poll(self, handle: PilotHandle) -> PilotStatus:
        """The pilot's status now."""

    @abstractmethod
    def cancel(self, handle: PilotHandle) -> None:
        """Stop the pilot (it kills its payload and reports the job failed); harmless
        for a pilot that has ended."""

    @abstractmethod
    def cleanup(self, handle: PilotHandle) -> None:
        """Forget an ended pilot and free what the backend holds for it (process
        slots, batch records); its log stays. ``ValueError`` while it still runs."""

    def wait(self, handle: PilotHandle, timeout: float | None = None) -> PilotStatus:
        """Poll until the pilot has ended (or ``timeout`` passed); return its status."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while (status := self.poll(handle)) not in PILOT_ENDED:
            if deadline is not None and time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        return status

    def _own(self, handle: PilotHandle) -> None:
        if handle.backend != self.name:
            raise ValueError(f"a {handle.backend!r} pilot handle given to the "
                             f"{self.name!r} factory")


def check_submit(server_url: str, queue: str, n: int, limit: int = MAX_PER_SUBMIT) -> None:
    """The limits of every submit: 1 to ``limit`` pilots, a bounded queue name
    without blanks or control characters, an http(s) server URL."""
    if type(n) is not int or not 1 <= n <= limit:
        raise SubmitError(f"n must be an integer from 1 to {limit}, got {n!r}")
    if (not isinstance(queue, str) or not 0 < len(queue) <= QUEUE_NAME_MAX
            or not queue.isprintable() or any(c.isspace() for c in queue)):
        raise SubmitError(f"not a queue name: {str(queue)[:QUEUE_NAME_MAX]!r}")
    if not isinstance(server_url, str) or not server_url.startswith(("http://", "https://")):
        raise SubmitError(f"the server URL must be http(s)://..., got {str(server_url)[:200]!r}")


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
    give_up_after: float | None = None,
    token_file: Path | None = None,
    python: str = sys.executable,
) -> list[str]:
    """The command line of one pilot. The token travels as a file's path (mode 0600),
    never as a value: every user of the machine or batch system sees a command line."""
    argv = [python, "-m", "dawms.pilot", "--server", server_url, "--queue", queue,
            "--workdir", str(workdir)]
    optional = {"--pilot-id": pilot_id, "--max-jobs": max_jobs, "--idle-timeout": idle_timeout,
                "--poll-interval": poll_interval, "--lifetime": lifetime,
                "--kill-grace": kill_grace, "--give-up-after": give_up_after,
                "--token-file": token_file}
    for flag, value in optional.items():
        if value is not None:
            argv += [flag, str(value)]
    return argv


TOKEN_FILE_MAX = 8192  # the pilot reads at most this much of its token file


def write_token_file(directory: Path, token: str) -> Path:
    """Write ``token`` to a new file of mode 0600 under ``directory`` (created 0700);
    the pilot gets its path (``--token-file``), never the value on a command line."""
    if not isinstance(token, str) or not token or len(token) > TOKEN_FILE_MAX \
            or not token.isascii() or not token.isprintable():
        raise SubmitError("a pilot token must be printable ASCII of at most "
                          f"{TOKEN_FILE_MAX} characters")
    directory = Path(directory)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / f"token-{uuid.uuid4().hex}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token)
    return path


def pilot_environ(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment a pilot starts with: this process's, less any bearer token it
    holds (a factory's token must not reach its pilots), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in TOKEN_ENVS}
    env.update(extra or {})
    return env
