"""The Python client of the dawms server, for scripts, notebooks and the CLI.

    from dawms.client import Client
    c = Client("http://127.0.0.1:8080", token=os.environ["DAWMS_TOKEN"])
    task_id = c.submit_task({...})["task_id"]
    c.summary(task_id)

The token (``dawms token issue``) is sent as ``Authorization: Bearer``; it is
never put in a URL or an error text. Errors come back as ``DawmsError`` carrying
the server's message and HTTP status.
"""

from __future__ import annotations

from typing import Any

import httpx


class DawmsError(Exception):
    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class Client:
    def __init__(self, server: str = "http://127.0.0.1:8080", *, token: str | None = None,
                 timeout: float = 30.0) -> None:
        headers = {"Authorization": f"Bearer {token.strip()}"} if token else {}
        self._http = httpx.Client(base_url=server.rstrip("/"), timeout=timeout, headers=headers)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            resp = self._http.request(method, f"/api/v1{path}", **kwargs)
        except httpx.HTTPError as exc:
            raise DawmsError(f"cannot reach the dawms server at {self._http.base_url}: {exc}",
                             0) from None
        try:
            body = resp.json()
        except ValueError:
            raise DawmsError(f"{resp.status_code}: {resp.text[:200]}", resp.status_code) from None
        if not body.get("success"):
            raise DawmsError(body.get("message") or resp.reason_phrase, resp.status_code)
        return body.get("data")

    def ping(self) -> dict[str, Any]:
        return self._call("GET", "/ping")

    def healthz(self) -> dict[str, Any]:
        """The server is up (no token needed)."""
        try:
            resp = self._http.get("/healthz")
        except httpx.HTTPError as exc:
            raise DawmsError(f"cannot reach the dawms server at {self._http.base_url}: {exc}",
                             0) from None
        if resp.status_code != 200:
            raise DawmsError(f"healthz answered {resp.status_code}", resp.status_code)
        return resp.json().get("data") or {}

    def pilot_token(self, queues: list[str], lifetime_s: int = 6 * 3600) -> dict[str, Any]:
        """As a factory: a pilot token bound to ``queues``."""
        return self._call("POST", "/factory/pilot_token",
                          json={"queues": queues, "lifetime_s": lifetime_s})

    def submit_task(self, spec: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", "/task/submit", json=spec)

    def tasks(self, state: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit, **({"state": state} if state else {})}
        return self._call("GET", "/task/list", params=params)

    def task(self, task_id: int) -> dict[str, Any]:
        return self._call("GET", f"/task/{task_id}")

    def jobs(self, task_id: int | None = None, state: str | None = None,
             limit: int = 1000) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit}
        if task_id is not None:
            params["task_id"] = task_id
        if state:
            params["state"] = state
        return self._call("GET", "/job/list", params=params)

    def job(self, job_id: int) -> dict[str, Any]:
        return self._call("GET", f"/job/{job_id}")

    def kill_jobs(self, job_ids: list[int], reason: str = "") -> dict[str, str]:
        return self._call("POST", "/job/kill", json={"job_ids": job_ids, "reason": reason})

    def kill_task(self, task_id: int, reason: str = "") -> dict[str, Any]:
        return self._call("POST", "/task/kill", json={"task_id": task_id, "reason": reason})

    def reassign_jobs(self, job_ids: list[int], queue: str | None = None) -> dict[str, str]:
        return self._call("POST", "/job/reassign", json={"job_ids": job_ids, "queue": queue})

    def reassign_task(self, task_id: int, queue: str | None = None) -> dict[str, str]:
        return self._call("POST", "/task/reassign", json={"task_id": task_id, "queue": queue})

    def staging(self, task_id: int | None = None, state: str | None = None,
                limit: int = 100) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit}
        if task_id is not None:
            params["task_id"] = task_id
        if state:
            params["state"] = state
        return self._call("GET", "/staging/list", params=params)

    def cancel_staging(self, request_ids: list[int], reason: str = "") -> dict[str, str]:
        return self._call("POST", "/staging/cancel",
                          json={"request_ids": request_ids, "reason": reason})

    def staging_priority(self, request_ids: list[int], priority: int) -> dict[str, str]:
        return self._call("POST", "/staging/priority",
                          json={"request_ids": request_ids, "priority": priority})

    def declare_bad(self, replicas: list[tuple[str, str]], reason: str) -> dict[str, Any]:
        """Mark ``(scope:name, endpoint)`` replicas bad; per replica what became of it."""
        return self._call("POST", "/replica/declare_bad", json={
            "replicas": [{"did": did, "endpoint": ep} for did, ep in replicas],
            "reason": reason})

    def summary(self, task_id: int | None = None) -> dict[str, Any]:
        return self._call("GET", "/summary",
                          params={"task_id": task_id} if task_id is not None else {})
