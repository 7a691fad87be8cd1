"""Hermes' messages from a STOMP broker (RabbitMQ's STOMP plugin, ActiveMQ), as PanDA gets them.

``StompConsumer`` keeps one connection with a durable subscription (messages
published while dawms is down wait in the broker) and client-individual acks:
a message is acknowledged only after its events are committed to the catalog;
if storing fails it is nacked and the broker delivers it again. A body that is
not a Rucio message is acknowledged and logged (redelivery cannot fix it). The
backend declares ``ensure_running`` as a daemon, so the scheduler reconnects it
within one interval after the broker or the network went away.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .messages import BadMessages, apply_messages, parse_body
from .settings import RucioSettings

if TYPE_CHECKING:
    from dawms.catalog.db import Database

    from .ddm import RucioDDM

log = logging.getLogger(__name__)


class StompConsumer:
    """One STOMP connection feeding Rucio's messages into the catalog."""

    def __init__(self, ddm: RucioDDM, settings: RucioSettings) -> None:
        self.ddm, self.settings = ddm, settings
        self._conn: Any = None
        self._db: Database | None = None
        self._lock = threading.Lock()
        self.applied = 0  # messages stored (for tests and metrics)

    @property
    def connected(self) -> bool:
        return self._conn is not None and self._conn.is_connected()

    def ensure_running(self, db: Database) -> int:
        """Connect and subscribe unless connected; returns 1 if it (re)connected."""
        import stomp

        with self._lock:
            self._db = db
            if self.connected:
                return 0
            brokers = self.settings.brokers()
            conn = stomp.Connection12(brokers, heartbeats=(10000, 10000),
                                      vhost=self.settings.stomp_vhost,
                                      reconnect_attempts_max=1)
            conn.set_listener("dawms", _listener(self, conn))
            try:
                conn.connect(self.settings.stomp_username, self.settings.stomp_password,
                             wait=True)
            except Exception as exc:
                log.warning("STOMP broker %s unreachable (%s); Rucio's messages wait in it, "
                            "the rule poller covers meanwhile", brokers, exc)
                return 0
            conn.subscribe(self.settings.stomp_destination, id=self.settings.stomp_subscription,
                           ack="client-individual",
                           headers={"durable": "true", "auto-delete": "false"})
            self._conn = conn
            log.info("STOMP: consuming %s at %s", self.settings.stomp_destination, brokers)
            return 1

    def handle(self, conn: Any, frame: Any) -> None:
        ack_id = frame.headers.get("ack") or frame.headers.get("message-id")
        try:
            messages = parse_body(frame.body)
        except BadMessages as exc:
            log.warning("STOMP: not a Rucio message, dropped: %s", exc)
            conn.ack(ack_id)
            return
        db = self._db
        try:
            assert db is not None
            with db.session() as s:
                apply_messages(s, self.ddm, messages, source="stomp", now=datetime.now(UTC))
        except Exception:
            log.exception("STOMP: could not store %d messages; the broker will redeliver",
                          len(messages))
            conn.nack(ack_id)
            return
        conn.ack(ack_id)
        self.applied += len(messages)

    def stop(self) -> None:
        with self._lock:
            if self._conn is not None:
                with contextlib.suppress(Exception):  # already gone
                    self._conn.disconnect()
                self._conn = None


def _listener(consumer: StompConsumer, conn: Any) -> Any:
    import stomp

    class Listener(stomp.ConnectionListener):
        def on_message(self, frame: Any) -> None:
            consumer.handle(conn, frame)

        def on_error(self, frame: Any) -> None:
            log.warning("STOMP error from the broker: %s", frame.body)

        def on_disconnected(self) -> None:
            log.warning("STOMP: disconnected; reconnecting on the next daemon run")

    return Listener()
