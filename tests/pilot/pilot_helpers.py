"""Helpers for the pilot tests: a small real HTTP server speaking ``dawms.wire``.

The stub server is a stdlib ``http.server`` in a thread. It hands out the jobs a
test queues, records every call, checks each update_job body parses as a
``wire.JobReport`` with every field present, and can answer 409 or a kill
command when a test says so.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from dawms import wire
from dawms.storage.checksum import bytes_adler32

UPDATE_FIELDS = {"job_id", "attempt", "lease_token", "state", "metrics", "exit_code",
                 "error_category", "error_diag", "outputs", "bad_replicas"}

# A payload for tests: concatenates its inputs into its output; the env var
# TEST_EXIT makes it fail, TEST_SLEEP makes it sleep (writing its pid first).
PAYLOAD_SCRIPT = """\
import os, sys, time
*inputs, output = sys.argv[1:]
print("payload inputs:", inputs)
if os.environ.get("TEST_SLEEP"):
    with open("payload.pid", "w") as f:
        f.write(str(os.getpid()))
    time.sleep(float(os.environ["TEST_SLEEP"]))
code = int(os.environ.get("TEST_EXIT", "0"))
if code:
    print("something went wrong in the payload", file=sys.stderr)
    sys.exit(code)
with open(output, "wb") as out:
    for name in inputs:
        with open(name, "rb") as f:
            out.write(f.read())
"""


class StubServer:
    """What the test sees of the server: queued jobs, recorded calls, behaviour knobs."""

    def __init__(self) -> None:
        self.jobs: list[dict[str, Any]] = []
        self.pending: Callable[[], int] = lambda: 0
        self.stale_when: Callable[[dict[str, Any]], bool] = lambda body: False
        self.command_when: Callable[[dict[str, Any]], str | None] = lambda body: None
        # get_command's answer (None: no command); a 409 when stale_when says so
        self.poll_command: Callable[[dict[str, Any]], str | None] = lambda body: None
        self.command_poll_s = 0.0  # what acquire_jobs tells pilots
        self.calls: list[tuple[float, str, dict[str, Any], int]] = []
        self.lock = threading.Lock()
        self.url = ""

    def updates(self) -> list[dict[str, Any]]:
        with self.lock:
            return [body for _, path, body, _ in self.calls if path == wire.UPDATE_JOB]

    def states(self) -> list[str]:
        return [u["state"] for u in self.updates()]

    def polls(self) -> list[dict[str, Any]]:
        with self.lock:
            return [body for _, path, body, _ in self.calls if path == wire.GET_COMMAND]

    def acquire_count(self) -> int:
        with self.lock:
            return sum(1 for _, path, _, _ in self.calls if path == wire.ACQUIRE_JOBS)

    def reply(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if path == wire.ACQUIRE_JOBS:
            with self.lock:
                jobs = [self.jobs.pop(0)] if self.jobs else []
            return 200, {"jobs": jobs, "pending": self.pending(),
                         "command_poll_s": self.command_poll_s}
        if path == wire.GET_COMMAND:
            try:
                wire.CommandQuery.from_dict(body)
            except wire.WireError:
                return 400, {}
            if self.stale_when(body):
                return wire.HTTP_STALE, {}
            return 200, {"command": self.poll_command(body)}
        if path == wire.UPDATE_JOB:
            try:
                wire.JobReport.from_dict(body)
            except wire.WireError:
                return 400, {}
            if set(body) != UPDATE_FIELDS:
                return 400, {}
            if self.stale_when(body):
                return wire.HTTP_STALE, {}
            return 200, {"command": self.command_when(body)}
        return 404, {}


def _handler(stub: StubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            status, data = stub.reply(self.path, body)
            with stub.lock:
                stub.calls.append((time.monotonic(), self.path, body, status))
            envelope = {"success": status == 200, "message": "" if status == 200 else "refused",
                        "data": data}
            raw = json.dumps(envelope).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@contextmanager
def running_stub_server() -> Iterator[StubServer]:
    stub = StubServer()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(stub))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    stub.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield stub
    finally:
        httpd.shutdown()
        httpd.server_close()


adler32_hex = bytes_adler32  # the one helper, in dawms.storage.checksum


def wait_for(predicate: Callable[[], object], timeout: float = 5.0) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` passes; return its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


def pid_alive(pid: int) -> bool:
    """Whether a process runs; a zombie (exited, not reaped yet) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True
