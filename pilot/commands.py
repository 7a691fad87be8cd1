"""The command poll: a kill reaches a running payload within ``interval_s``.

The full heartbeat carries metrics and comes every 30 minutes (PanDA's
default), far too seldom for ``dawms job kill``. While a job works this thread
asks the server's cheap ``get_command`` every ``interval_s`` (the server sets it
in the ``acquire_jobs`` reply). ``tobekilled`` or a 409 (the attempt is no
longer ours) kills the payload at once; an unreachable server is not retried
here: the next poll asks again, and the payload goes on.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from dawms.pilot.client import ClientError, JobRef, PilotClient, StaleJob
from dawms.wire import Command

log = logging.getLogger(__name__)


class CommandPoller:
    """Polls ``get_command`` for one job; ``command``/``stale`` tell what it found."""

    def __init__(self, client: PilotClient, ref: JobRef, interval_s: float, *,
                 kill: Callable[[str, str], None]) -> None:
        self.client = client
        self.ref = ref
        self.interval_s = interval_s
        self._kill = kill  # kill(error_category, diag)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"commands-{ref.job_id}",
                                        daemon=True)
        self.command: str | None = None
        self.stale = False
        self.polls = 0

    def start(self) -> CommandPoller:
        if self.interval_s > 0:
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def __enter__(self) -> CommandPoller:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                command = self.client.get_command(self.ref)
            except StaleJob as exc:
                log.warning("command poll of job %d attempt %d refused as stale: %s",
                            self.ref.job_id, self.ref.attempt, exc)
                self.stale = True
                self._kill("killed", f"the server no longer knows this attempt: {exc}")
                return
            except ClientError as exc:  # the server is down or refused: ask again later
                log.info("command poll of job %d failed: %s", self.ref.job_id, exc)
                continue
            self.polls += 1
            if command == Command.KILL:
                log.warning("server command for job %d: %s", self.ref.job_id, command)
                self.command = command
                self._kill("killed", "killed on the server's command")
                return
