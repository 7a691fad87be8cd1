"""STOMP helpers for the tests: RabbitMQ's STOMP plugin on 127.0.0.1:61613 (guest/guest)."""

from __future__ import annotations

import json
import os
import threading
from typing import Any

import stomp

HOST, PORT = os.environ.get("DAWMS_TEST_STOMP", "127.0.0.1:61613").split(":")
DEST = "/topic/rucio.events"


def connect(listener: Any = None) -> stomp.Connection12:
    conn = stomp.Connection12([(HOST, int(PORT))], vhost="/")
    if listener is not None:
        conn.set_listener("test", listener)
    conn.connect("guest", "guest", wait=True)
    return conn


def ensure_durable_queue(subscription: str) -> None:
    """Subscribe durably once and leave: the broker keeps what is published from now on."""
    conn = connect()
    done = threading.Event()

    class Receipt(stomp.ConnectionListener):
        def on_receipt(self, frame: Any) -> None:
            done.set()

    conn.set_listener("receipt", Receipt())
    conn.subscribe(DEST, id=subscription, ack="client-individual",
                   headers={"durable": "true", "auto-delete": "false", "receipt": "sub"})
    assert done.wait(10), "the broker did not confirm the subscription"
    conn.disconnect()


def publish(messages: list[dict[str, Any]], destination: str = DEST) -> None:
    """Send messages the way hermes does (one JSON body each, persistent)."""
    conn = connect()
    for m in messages:
        conn.send(destination, json.dumps(m), headers={"persistent": "true",
                                                       "event_type": m["event_type"]})
    conn.disconnect()
