"""Pilots as local processes: the embedded default and what the demo uses.

Each pilot is ``python -m dawms.pilot`` in its own session (so cancel can signal
its whole group) with its own work dir and log file under ``workdir``. Only the
processes this factory started are ever signalled: a handle it does not know
(another factory's, or one from before a restart) polls ``UNKNOWN`` and is not
touched, since its pid may belong to anything by now.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dawms.pilot.factory.base import (
    PilotFactory,
    PilotHandle,
    PilotStatus,
    check_submit,
    pilot_argv,
    pilot_environ,
)
from dawms.pilot.main import TOKEN_ENV


class LocalFactory(PilotFactory):
    """Runs pilots as child processes of this one."""

    name = "local"

    def __init__(self) -> None:
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._cancelled: set[str] = set()

    def submit(
        self, server_url: str, queue: str, n: int, workdir: Path, *,
        env: Mapping[str, str] | None = None, token: str | None = None, **opts: Any,
    ) -> list[PilotHandle]:
        """Start ``n`` pilots; ``opts`` are ``pilot_argv`` options (max_jobs, idle_timeout,
        poll_interval, lifetime, kill_grace, give_up_after, python); ``env`` is added to
        the environment."""
        check_submit(server_url, queue, n, self.max_per_submit)
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        child_env = pilot_environ(env)  # never this process's own token
        if token:
            child_env[TOKEN_ENV] = token
        handles = []
        for _ in range(n):
            pilot_id = f"{socket.gethostname()}:local:{uuid.uuid4().hex[:12]}"
            tag = pilot_id.rsplit(":", 1)[1]
            pilot_dir = workdir / f"pilot-{tag}"
            pilot_dir.mkdir()
            log_path = workdir / f"pilot-{tag}.log"
            argv = pilot_argv(server_url, queue, pilot_dir, pilot_id=pilot_id, **opts)
            with open(log_path, "wb") as log_file:
                proc = subprocess.Popen(argv, cwd=pilot_dir, env=child_env,
                                        stdin=subprocess.DEVNULL, stdout=log_file,
                                        stderr=subprocess.STDOUT, start_new_session=True)
            self._procs[str(proc.pid)] = proc
            handles.append(PilotHandle(self.name, str(proc.pid), pilot_id, log_path))
        return handles

    def poll(self, handle: PilotHandle) -> PilotStatus:
        self._own(handle)
        proc = self._procs.get(handle.id)
        if proc is None:
            return PilotStatus.UNKNOWN
        code = proc.poll()
        if code is None:
            return PilotStatus.RUNNING
        if handle.id in self._cancelled:
            return PilotStatus.CANCELLED
        return PilotStatus.DONE if code == 0 else PilotStatus.FAILED

    def cancel(self, handle: PilotHandle) -> None:
        self._own(handle)
        proc = self._procs.get(handle.id)
        if proc is None or proc.poll() is not None:
            return  # not ours, or ended already: nothing to stop
        self._cancelled.add(handle.id)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # the pilot kills its payload itself

    def cleanup(self, handle: PilotHandle) -> None:
        self._own(handle)
        proc = self._procs.get(handle.id)
        if proc is None:
            return
        if proc.poll() is None:
            raise ValueError(f"pilot {handle.pilot_id} (pid {handle.id}) is still running; "
                             "cancel it first")
        del self._procs[handle.id]  # reaped by poll(); the log file stays
        self._cancelled.discard(handle.id)

    def wait(self, handle: PilotHandle, timeout: float | None = None) -> PilotStatus:
        """Block until the pilot exits (or ``timeout``); return its status."""
        self._own(handle)
        proc = self._procs.get(handle.id)
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout)
        return self.poll(handle)
