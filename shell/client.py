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

from pathlib import Path
from typing import Any
from urllib.parse import quote

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

    def explain_job(self, job_id: int) -> dict[str, Any]:
        return self._call("GET", f"/job/{job_id}/explain")

    def explain_task(self, task_id: int) -> dict[str, Any]:
        return self._call("GET", f"/task/{task_id}/explain")

    def dry_run(self, spec: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", "/task/dry_run", json=spec)
    def declare_bad(self, replicas: list[tuple[str, str]], reason: str) -> dict[str, Any]:
        """Mark ``(scope:name, endpoint)`` replicas bad; per replica what became of it."""
        return self._call("POST", "/replica/declare_bad", json={
            "replicas": [{"did": did, "endpoint": ep} for did, ep in replicas],
            "reason": reason})

    def summary(self, task_id: int | None = None) -> dict[str, Any]:
        return self._call("GET", "/summary",
                          params={"task_id": task_id} if task_id is not None else {})

    # ------------------------------------------------------------ browsing (read-only)
    def task_progress(self, task_id: int) -> dict[str, Any]:
        """Pieces and input files done, jobs by state, ``eta_s`` (None if unknown)."""
        return self._call("GET", f"/task/{task_id}/progress")

    def datasets(self, scope: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit, **({"scope": scope} if scope else {})}
        return self._call("GET", "/dataset/list", params=params)

    def dataset(self, did: str, files: int = 100) -> dict[str, Any]:
        scope, sep, name = did.partition(":")
        if not sep or not scope or not name or "/" in did:
            raise DawmsError(f"dataset {did[:200]!r} must be scope:name", 0)
        return self._call("GET", f"/dataset/{quote(scope, safe='')}/{quote(name, safe='')}",
                          params={"files": files})

    def requests(self, state: str | None = None, kind: str | None = None,
                 limit: int = 100) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit}
        if state:
            params["state"] = state
        if kind:
            params["kind"] = kind
        return self._call("GET", "/request/list", params=params)

    def sites(self) -> list[dict[str, Any]]:
        return self._call("GET", "/site/list")

    def site(self, name: str) -> dict[str, Any]:
        return self._call("GET", f"/site/{quote(name, safe='')}")

    def queues(self, site: str | None = None, status: str | None = None
               ) -> list[dict[str, Any]]:
        params = {k: v for k, v in (("site", site), ("status", status)) if v}
        return self._call("GET", "/queue/list", params=params)

    def queue(self, name: str) -> dict[str, Any]:
        return self._call("GET", f"/queue/{quote(name, safe='')}")

    def job_log(self, job_id: int, dest: str | Path, max_bytes: int = 256 * 1024 * 1024
                ) -> Path:
        """Download the job's log tarball to ``dest`` (at most ``max_bytes``); on any
        failure nothing is left at ``dest``."""
        dest = Path(dest)
        part = dest.with_name(f".{dest.name}.part")
        try:
            with self._http.stream("GET", f"/api/v1/job/{job_id}/log") as resp:
                if resp.status_code != 200:
                    resp.read()
                    try:
                        message = resp.json().get("message") or resp.reason_phrase
                    except ValueError:
                        message = f"{resp.status_code}: {resp.text[:200]}"
                    raise DawmsError(message, resp.status_code)
                got = 0
                with open(part, "wb") as f:
                    for chunk in resp.iter_bytes(1 << 20):
                        got += len(chunk)
                        if got > max_bytes:
                            raise DawmsError(f"the log of job {job_id} is over {max_bytes} "
                                             "bytes", 413)
                        f.write(chunk)
            part.replace(dest)
        except httpx.HTTPError as exc:
            raise DawmsError(f"cannot reach the dawms server at {self._http.base_url}: {exc}",
                             0) from None
        finally:
            part.unlink(missing_ok=True)
        return dest

def _params(**values: Any) -> dict[str, Any]:
    """Query parameters without the unset ones (a list repeats its key)."""
    return {k: v for k, v in values.items() if v is not None and v != ""}
