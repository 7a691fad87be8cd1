"""The pilot protocol: paths, shapes and rules both ends agree on.

This is the one module of ours that the server and the pilot share; it imports
nothing beyond the standard library so the pilot stays light. Paths follow the
PanDA server's new API (``/api/v1/<module>/<method>``) and every reply is an
envelope ``{"success": bool, "message": str, "data": ...}``.

acquire_jobs (POST) request::

    {"queue": "SITE_A_PROD", "pilot_id": "host:pid:uuid", "n_jobs": 1}

reply data::

    {"jobs": [JobSpec, ...], "pending": <jobs of this queue not yet runnable>}

A JobSpec::

    {"job_id": 12, "attempt": 1, "lease_token": "9f...", "task_id": 3,
     "job_name": "demo.reco.3._000004", "transformation": "python3 x.py {inputs} {output}",
     "cores": 1, "memory_mb": 2000, "walltime_s": 3600, "heartbeat_s": 30,
     "inputs": [{"scope": "demo", "lfn": "raw.A._000001", "size": 4096,
                 "adler32": "0a1b2c3d", "guid": "...", "urls": ["file:///..."]}],
     "outputs": [{"scope": "demo", "lfn": "reco.3._000004.1", "dataset": "demo:reco.3",
                  "url": "file:///.../reco.3._000004.1"}],
     "log": {"scope": "demo", "lfn": "...log.tgz", "dataset": "demo:reco.3.log",
             "url": "file:///..."},
     "movers": {"read": ["file"], "write": ["file"]}}

update_job (POST) request, for a heartbeat or the final report::

    {"job_id": 12, "attempt": 1, "lease_token": "9f...", "state": "running",
     "metrics": {"cpu_s": 1.2, "wall_s": 3.4, "max_rss_kb": 12000,
                 "bytes_in": 0, "bytes_out": 0},
     "exit_code": null, "error_category": "", "error_diag": "",
     "outputs": [{"lfn": ..., "type": "out"|"log", "size": n, "adler32": "8 hex"}]}

reply data: ``{"command": null}`` or ``{"command": "tobekilled"}``. A stale
``(job_id, attempt, lease_token)`` gets HTTP 409 and changes nothing.
A heartbeat repeats the job's current state (``starting`` while the pilot
stages in, ``running`` after) with fresh metrics; the server takes an update to
the state the job is already in as a heartbeat.

update_jobs_bulk (POST) request: ``{"updates": [update_job request, ...]}`` (at
most 1000); reply data, a list with one result per update in the same order::

    [{"job_id": 12, "success": true, "command": null},
     {"job_id": 13, "success": false, "message": "...", "stale": true}]
"""

from __future__ import annotations

API = "/api/v1"
ACQUIRE_JOBS = f"{API}/pilot/acquire_jobs"
UPDATE_JOB = f"{API}/pilot/update_job"
UPDATE_JOBS_BULK = f"{API}/pilot/update_jobs_bulk"
PING = f"{API}/ping"

# What a pilot may report (PanDA's rule); the server refuses anything else.
REPORTABLE_STATES = ("starting", "running", "holding", "transferring", "finished", "failed")
FINAL_REPORT_STATES = ("finished", "failed")

# Why a job failed, as the pilot classifies it.
ERROR_CATEGORIES = ("pilot", "stagein", "payload", "stageout", "lost_heartbeat", "timeout",
                    "killed")

COMMAND_KILL = "tobekilled"
HTTP_STALE = 409  # the attempt or lease the pilot holds is not current
