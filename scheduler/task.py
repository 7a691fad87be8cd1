"""Task submission: validate a production manager's task spec and register it.

A spec is a dict (from TOML, JSON or the Python client)::

    name = "demo.reco"
    transformation = "python3 reco.py --out {output} {inputs}"
    input_datasets = ["demo:raw.A", "demo:raw.B"]
    output_dataset = "demo:reco.{task_id}"
    log_dataset = "demo:reco.{task_id}.log"       # optional
    priority = 500                                # optional
    [split]
    files_per_job = 2                             # and/or gb_per_job
    [resources]
    cores = 1
    memory_mb = 2000
    walltime_s = 3600
    disk_mb = 1000
    [retry]
    max_attempts = 3

Every problem is reported at once (``TaskSpecError``) and nothing is stored; an
input dataset the DDM does not know is such a problem.
"""

from __future__ import annotations

import string
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from dawms.catalog.models import Task
from dawms.catalog.states import Entity, TaskState
from dawms.catalog.transition import record_created
from dawms.ddm_bridge.abc import DDM, UnknownDataset, split_did

PLACEHOLDERS = {"inputs", "output", "outputs", "job_id", "attempt"}
_TOP = {"name", "owner", "transformation", "input_datasets", "output_dataset", "log_dataset",
        "split", "resources", "retry", "priority", "share"}
_SPLIT = {"files_per_job": int, "gb_per_job": (int, float)}
_RESOURCES = {"cores": 1, "memory_mb": 2000, "walltime_s": 3600, "disk_mb": 1000}


class TaskSpecError(ValueError):
    """The task spec is invalid; the message lists every problem."""


def _check_template(text: str, allowed: set[str], what: str, errors: list[str]) -> None:
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(text) if f is not None}
    except ValueError as exc:
        errors.append(f"{what}: {exc}")
        return
    if bad := fields - allowed:
        errors.append(f"{what}: unknown placeholders {sorted(bad)}; allowed {sorted(allowed)}")


def validate(spec: dict[str, Any], ddm: DDM | None = None,
             session: Session | None = None) -> dict[str, Any]:
    """Return the normalized spec or raise TaskSpecError listing every problem."""
    errors: list[str] = []
    if not isinstance(spec, dict):
        raise TaskSpecError("a task spec must be a mapping")
    if unknown := set(spec) - _TOP:
        errors.append(f"unknown keys {sorted(unknown)}")
    for key in ("name", "transformation", "output_dataset"):
        if not isinstance(spec.get(key), str) or not spec.get(key):
            errors.append(f"{key} is required and must be a non-empty string")
    inputs = spec.get("input_datasets")
    if not isinstance(inputs, list) or not inputs or not all(isinstance(d, str) for d in inputs):
        errors.append("input_datasets must be a non-empty list of 'scope:name'")
        inputs = []
    for did in inputs:
        try:
            split_did(did)
        except ValueError as exc:
            errors.append(str(exc))
    if isinstance(spec.get("transformation"), str):
        _check_template(spec["transformation"], PLACEHOLDERS, "transformation", errors)
    out_ds = spec.get("output_dataset") or ""
    log_ds = spec.get("log_dataset") or (f"{out_ds}.log" if out_ds else "")
    for key, value in (("output_dataset", out_ds), ("log_dataset", log_ds)):
        if isinstance(value, str) and value:
            _check_template(value, {"task_id"}, key, errors)
            try:
                split_did(value.replace("{task_id}", "0"))
            except ValueError as exc:
                errors.append(f"{key}: {exc}")
    split = spec.get("split", {"files_per_job": 1})
    if not isinstance(split, dict) or not split:
        errors.append("split must be a table with files_per_job and/or gb_per_job")
        split = {}
    for key, value in split.items():
        if key not in _SPLIT:
            errors.append(f"split: unknown rule {key!r}; known {sorted(_SPLIT)}")
        elif not isinstance(value, _SPLIT[key]) or isinstance(value, bool) or value <= 0:
            errors.append(f"split.{key} must be a positive number")
    resources = dict(_RESOURCES)
    for key, value in (spec.get("resources") or {}).items():
        if key not in _RESOURCES:
            errors.append(f"resources: unknown key {key!r}; known {sorted(_RESOURCES)}")
        elif not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            errors.append(f"resources.{key} must be a positive integer")
        else:
            resources[key] = value
    retry = {"max_attempts": 3, **(spec.get("retry") or {})}
    if set(retry) - {"max_attempts"} or not isinstance(retry["max_attempts"], int) \
            or retry["max_attempts"] < 1:
        errors.append("retry must be {max_attempts = <int >= 1>}")
    priority = spec.get("priority", 500)
    if not isinstance(priority, int) or isinstance(priority, bool):
        errors.append("priority must be an integer")
    if not errors and ddm is not None and session is not None:
        for did in inputs:
            try:
                if not ddm.list_files(session, did):
                    errors.append(f"input dataset {did} is empty")
            except UnknownDataset as exc:
                errors.append(str(exc))
    if errors:
        raise TaskSpecError("invalid task spec: " + "; ".join(errors))
    return {"name": spec["name"], "owner": spec.get("owner", "unknown"),
            "transformation": spec["transformation"], "input_datasets": list(inputs),
            "output_dataset": out_ds, "log_dataset": log_ds, "split": split,
            "resources": resources, "retry": retry, "priority": priority,
            "share": spec.get("share", "production")}


def submit(session: Session, spec: dict[str, Any], ddm: DDM, *, owner: str | None = None,
           now: datetime | None = None) -> Task:
    """Validate ``spec`` (inputs must exist in the DDM) and register the task."""
    clean = validate(spec, ddm, session)
    if owner:
        clean["owner"] = owner
    now = now or datetime.now(UTC)
    task = Task(state=TaskState.REGISTERED, created_at=now, updated_at=now, **clean)
    session.add(task)
    session.flush()
    task.output_dataset = task.output_dataset.replace("{task_id}", str(task.id))
    task.log_dataset = task.log_dataset.replace("{task_id}", str(task.id))
    record_created(session, Entity.TASK, [(task.id, None)], TaskState.REGISTERED,
                   actor=f"user:{task.owner}", reason="submitted", now=now)
    return task
