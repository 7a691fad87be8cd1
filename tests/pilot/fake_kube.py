"""A fake Kubernetes API server: the pods and secrets calls ``KubernetesFactory`` makes.

No cluster can run here, so this small HTTP server speaks the parts of the core/v1
API the backend uses (create/read/delete pod, read pod log, create/delete secret)
and runs each pod's container as a local process the way a kubelet would: its
``command`` as argv (no shell), *only* its ``env`` (``secretKeyRef`` resolved from
the stored secrets) plus PATH, stdout and stderr as the pod log. Phases follow the
process: Running, then Succeeded or Failed; DELETE sets ``deletionTimestamp`` and
SIGTERMs the process, and the pod is gone once it exited.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import signal
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

_PATH = re.compile(r"^/api/v1/namespaces/([a-z0-9-]+)/(pods|secrets)(?:/([a-z0-9.-]+))?(/log)?$")


class FakeKube:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pods: dict[str, dict[str, Any]] = {}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.secrets: dict[str, dict[str, str]] = {}
        self.logs = Path(tempfile.mkdtemp(prefix="fake-kube-"))
        self.created: list[dict[str, Any]] = []  # every pod body as posted

    def _phase(self, name: str) -> str:
        code = self.procs[name].poll()
        return "Running" if code is None else ("Succeeded" if code == 0 else "Failed")

    def _refresh(self) -> None:
        for name, pod in list(self.pods.items()):
            if pod["metadata"].get("deletionTimestamp") and self.procs[name].poll() is not None:
                del self.pods[name]

    def create_pod(self, ns: str, body: dict[str, Any]) -> dict[str, Any]:
        self.created.append(body)
        name = body["metadata"]["name"]
        [container] = body["spec"]["containers"]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/tmp"}
        for var in container.get("env") or []:
            if "valueFrom" in var:
                ref = var["valueFrom"]["secretKeyRef"]
                env[var["name"]] = self.secrets[f"{ns}/{ref['name']}"][ref["key"]]
            else:
                env[var["name"]] = var.get("value", "")
        cwd = Path(container.get("workingDir") or "/")
        with open(self.logs / name, "wb") as log:
            self.procs[name] = subprocess.Popen(container["command"], cwd=cwd, env=env,
                                                stdin=subprocess.DEVNULL, stdout=log,
                                                stderr=subprocess.STDOUT,
                                                start_new_session=True)
        body["metadata"].update(namespace=ns, uid=name,
                                creationTimestamp=datetime.now(UTC).isoformat())
        self.pods[name] = body
        return self.read_pod(name)

    def read_pod(self, name: str) -> dict[str, Any]:
        return {**self.pods[name], "status": {"phase": self._phase(name)}}

    def delete_pod(self, name: str) -> dict[str, Any]:
        pod = self.pods[name]
        if self.procs[name].poll() is None:
            pod["metadata"]["deletionTimestamp"] = datetime.now(UTC).isoformat()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.procs[name].pid, signal.SIGTERM)
            return self.read_pod(name)
        del self.pods[name]
        return {"kind": "Status", "apiVersion": "v1", "status": "Success"}

    def kill_all(self) -> None:
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _handler(kube: FakeKube) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, status: int, body: Any, text: bool = False) -> None:
            data = body.encode() if text else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain" if text else "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _route(self, method: str) -> None:
            found = _PATH.match(self.path.split("?", 1)[0])
            if not found:
                return self._send(404, {"kind": "Status", "code": 404, "message": self.path})
            ns, kind, name, log = found.groups()
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}") if length else {}
            with kube.lock:
                kube._refresh()
                if kind == "secrets":
                    if method == "POST":
                        data = dict(body.get("stringData") or {})
                        data.update({k: base64.b64decode(v).decode()
                                     for k, v in (body.get("data") or {}).items()})
                        kube.secrets[f"{ns}/{body['metadata']['name']}"] = data
                        return self._send(201, {**body, "stringData": None})
                    if method == "DELETE" and kube.secrets.pop(f"{ns}/{name}", None) is not None:
                        return self._send(200, {"kind": "Status", "status": "Success"})
                elif method == "POST" and not name:
                    return self._send(201, kube.create_pod(ns, body))
                elif name in kube.pods:
                    if method == "GET" and log:
                        return self._send(200, (kube.logs / name).read_text(), text=True)
                    if method == "GET":
                        return self._send(200, kube.read_pod(name))
                    if method == "DELETE":
                        return self._send(200, kube.delete_pod(name))
            return self._send(404, {"kind": "Status", "apiVersion": "v1", "code": 404,
                                    "reason": "NotFound", "message": f"{kind} {name} not found"})

        def do_GET(self) -> None:  # noqa: N802
            self._route("GET")

        def do_POST(self) -> None:  # noqa: N802
            self._route("POST")

        def do_DELETE(self) -> None:  # noqa: N802
            self._route("DELETE")

    return Handler


@contextlib.contextmanager
def running_fake_kube() -> Iterator[tuple[FakeKube, str]]:
    kube = FakeKube()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(kube))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield kube, f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        kube.kill_all()
