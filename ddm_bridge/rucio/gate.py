"""The one door to the Rucio server: a lazily made client, and backing off while it is down.

Every call the bridge makes goes through ``RucioGate.call``. When Rucio cannot be
reached the gate raises ``RucioUnavailable`` (a ``DDMError``), logs one clear
line saying what waits and when it tries again, and refuses further calls at
once until then (doubling the wait up to a cap), so a scheduler cycle never
hangs on a dead server and nothing is marked done or failed meanwhile: the
requests stay open in the catalog and the next cycle asks again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from dawms.ddm_bridge.abc import DDMError

from .settings import RucioSettings

if TYPE_CHECKING:
    from rucio.client import Client

log = logging.getLogger(__name__)
T = TypeVar("T")


class RucioUnavailable(DDMError):
    """Rucio could not be reached; the operation was not done and will be tried again."""


def _connection_errors() -> tuple[type[BaseException], ...]:
    import requests
    from rucio.common.exception import CannotAuthenticate, ServerConnectionException

    return (ServerConnectionException, CannotAuthenticate, requests.ConnectionError,
            requests.Timeout, ConnectionError, TimeoutError)


class RucioGate:
    """A shared Rucio client with a back-off clock. Thread-safe."""

    def __init__(self, settings: RucioSettings,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._clock = clock
        self._client: Client | None = None
        self._lock = threading.Lock()
        self._down_until = 0.0
        self._delay = settings.backoff_initial_s
        self.failures = 0  # consecutive failed attempts to reach Rucio

    @property
    def where(self) -> str:
        return self.settings.host or "the host in rucio.cfg"

    def client(self) -> Client:
        with self._lock:
            if self._client is None:
                from rucio.client import Client

                self._client = Client(**self.settings.client_kwargs())  # type: ignore[arg-type]
            return self._client

    def call(self, what: str, fn: Callable[[Client], T]) -> T:
        """Run ``fn(client)``; ``what`` names the work for the log line if Rucio is down."""
        now = self._clock()
        if now < self._down_until:
            raise RucioUnavailable(f"Rucio at {self.where} is unreachable; {what} waits "
                                   f"(next try in {self._down_until - now:.0f} s)")
        errors = _connection_errors()
        try:
            result = fn(self.client())
        except errors as exc:
            with self._lock:
                self.failures += 1
                if isinstance(exc, errors[1]):  # could not authenticate: make a new client
                    self._client = None
                delay, self._delay = self._delay, min(self._delay * 2,
                                                      self.settings.backoff_max_s)
                self._down_until = self._clock() + delay
            log.warning("Rucio at %s is unreachable (%s: %s); %s waits, next try in %.1f s",
                        self.where, type(exc).__name__, str(exc).splitlines()[0][:200],
                        what, delay)
            raise RucioUnavailable(f"Rucio at {self.where} is unreachable; {what} waits: "
                                   f"{exc}") from exc
        if self.failures:
            log.info("Rucio at %s is reachable again after %d failed tries", self.where,
                     self.failures)
            with self._lock:
                self.failures, self._delay = 0, self.settings.backoff_initial_s
        return result
