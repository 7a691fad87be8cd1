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
    """An error reply: ``status`` (HTTP), ``code`` (the server's machine-readable word:
    ``not_found``, ``forbidden``, ``stale``, ``invalid``...; "" if none) and the message."""

    def __init__(self, message: str, status: int, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


NEXT_HEADER = "X-Next-After"  # the server's keyset paging cursor


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
        return self._call_paged(method, path, **kwargs)[0]

    def _call_paged(self, method: str, path: str, **kwargs: Any) -> tuple[Any, int | None]:
        """The reply's data and its next-page cursor (None: the last page)."""
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
            raise DawmsError(body.get("message") or resp.reason_phrase, resp.status_code,
                             str(body.get("code") or ""))
        after = resp.headers.get(NEXT_HEADER)
        return body.get("data"), int(after) if after and after.isdigit() else None

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

    def tasks(self, state: str | list[str] | None = None, limit: int = 100, *,
              owner: str | None = None, name: str | None = None,
              after: int | None = None) -> list[dict[str, Any]]:
        """One page of tasks, newest first (``name``: a prefix)."""
        return self.tasks_page(state, limit, owner=owner, name=name, after=after)[0]

    def tasks_page(self, state: str | list[str] | None = None, limit: int = 100, *,
                   owner: str | None = None, name: str | None = None,
                   after: int | None = None) -> tuple[list[dict[str, Any]], int | None]:
        """A page of tasks and the ``after`` of the next page (None: this was the last)."""
        params = _params(limit=limit, state=state, owner=owner, name=name, after=after)
        return self._call_paged("GET", "/task/list", params=params)

    def task(self, task_id: int) -> dict[str, Any]:
        return self._call("GET", f"/task/{task_id}")

    def set_task_priority(self, task_id: int, priority: int) -> dict[str, Any]:
        """The task's and its not yet dispatched jobs' new priority."""
        return self._call("POST", "/task/priority",
                          json={"task_id": task_id, "priority": priority})

    def jobs(self, task_id: int | None = None, state: str | list[str] | None = None,
             limit: int = 1000, *, queue: str | None = None, site: str | None = None,
             error_category: str | None = None,
             after: int | None = None) -> list[dict[str, Any]]:
        """One page of jobs, oldest first."""
        return self.jobs_page(task_id, state, limit, queue=queue, site=site,
                              error_category=error_category, after=after)[0]

    def jobs_page(self, task_id: int | None = None, state: str | list[str] | None = None,
                  limit: int = 1000, *, queue: str | None = None, site: str | None = None,
                  error_category: str | None = None, after: int | None = None
                  ) -> tuple[list[dict[str, Any]], int | None]:
        """A page of jobs and the ``after`` of the next page (None: this was the last)."""
        params = _params(limit=limit, task_id=task_id, state=state, queue=queue, site=site,
                         error_category=error_category, after=after)
        return self._call_paged("GET", "/job/list", params=params)

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

    def summary(self, task_id: int | None = None) -> dict[str, Any]:
        return self._call("GET", "/summary",
                          params={"task_id": task_id} if task_id is not None else {})


def _params(**values: Any) -> dict[str, Any]:
    """Query parameters without the unset ones (a list repeats its key)."""
    return {k: v for k, v in values.items() if v is not None and v != ""}
