"""The heartbeat: tells the server, every ``heartbeat_s``, that the job lives.

It runs in a thread while the job works, sends ``update_job`` with the job's
current state and metrics, and acts on the answer: the command ``tobekilled``
or a 409 (the attempt is no longer ours) kills the payload at once. A server
that cannot be reached is retried inside the client; the job goes on.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from dawms.pilot.client import ClientError, JobRef, PilotClient, StaleJob
from dawms.wire import Command

log = logging.getLogger(__name__)


class Heartbeat:
    """Periodic ``update_job`` for one job; ``stale`` / ``command`` tell what happened."""

    def __init__(
        self,
        client: PilotClient,
        ref: JobRef,
        interval_s: float,
        *,
        metrics: Callable[[], dict[str, float | int]],
        kill: Callable[[str, str], None],
        state: str = "running",
        lock: threading.Lock | None = None,
    ) -> None:
        self.client = client
        self.ref = ref
        self.interval_s = interval_s
        self.state = state  # the job's state to report; the runner may change it
        self._metrics = metrics
        self._kill = kill  # kill(error_category, diag)
        self._lock = lock or threading.Lock()  # shared with the job's own reports: in order
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-{ref.job_id}",
                                        daemon=True)
        self.stale = False
        self.command: str | None = None
        self.sent = 0

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop beating; returns once no heartbeat is in flight any more."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def __enter__(self) -> Heartbeat:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                with self._lock:
                    command = self.client.update_job(self.ref, self.state,
                                                     metrics=self._metrics(), cancel=self._stop)
            except StaleJob as exc:
                log.warning("heartbeat of job %d attempt %d refused as stale: %s",
                            self.ref.job_id, self.ref.attempt, exc)
                self.stale = True
                self._kill("killed", f"the server no longer knows this attempt: {exc}")
                return
            except ClientError as exc:  # includes ServerUnavailable; the job goes on
                log.warning("heartbeat of job %d failed: %s", self.ref.job_id, exc)
                continue
            self.sent += 1
            if command == Command.KILL:
                log.warning("server command for job %d: %s", self.ref.job_id, command)
                self.command = command
                self._kill("killed", "killed on the server's command")
                return
            if command:
                log.info("ignoring unknown server command %r for job %d", command,
                         self.ref.job_id)
