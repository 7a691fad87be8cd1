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
    [subscription]                                # optional; Rucio DDM only
    datasets = "demo:raw.run*"                    # scope:pattern of new datasets
    rses = ["SITE_B_DISK"]                        # endpoints that get a copy each
    lifetime_s = 604800                           # of those rules (default: none)
    activity = "Production Input"                 # of those rules

A ``[subscription]`` becomes a DDM subscription at submit (``DDM.subscribe``):
new datasets matching the pattern flow to the endpoints by themselves. A DDM
without subscriptions (the local one) refuses the task.

Every problem is reported at once (``TaskSpecError``) and nothing is stored; an
input dataset the DDM does not know is such a problem. Dataset names follow the
catalog's grammar (``catalog/names.py``): the output and log templates are
checked with the widest ``{task_id}`` filled in, and again with the real id, as
are the file names made from them; the transformation must split into a safe
argv (``wire/command.py``: placeholders per argument, none inside a script).
"""

from __future__ import annotations

import math
import re
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from dawms.catalog.models import StorageEndpoint, Task
from dawms.catalog.names import MAX_NAME, split_did
from dawms.catalog.states import Entity, TaskState
from dawms.catalog.transition import record_created
from dawms.ddm_bridge.abc import DDM, DDMError, Subscription, UnknownDataset
from dawms.wire.command import TemplateError, split_template

from .naming import log_lfn, output_lfn

_TOP = {"name", "owner", "transformation", "input_datasets", "output_dataset", "log_dataset",
        "split", "resources", "retry", "priority", "share", "subscription"}
_SPLIT = {"files_per_job": int, "gb_per_job": (int, float)}
_RESOURCES = {"cores": 1, "memory_mb": 2000, "walltime_s": 3600, "disk_mb": 1000}
# the catalog's column sizes (catalog/models.py): longer values cannot be stored
MAX_LEN = {"name": 255, "owner": 128, "share": 64, "output_dataset": 255, "log_dataset": 255}
MAX_LFN = MAX_NAME  # a file name made from a dataset name obeys the same grammar
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1  # priority and resources are INTEGER columns
MAX_FILES_PER_JOB = 10**6
MAX_BYTES = 2**63 - 1  # sizes are BIGINT
MAX_ATTEMPTS = 100
# what naming.py appends to a dataset's name to name its files (6-digit index, last attempt)
_LFN_SUFFIX = {"output_dataset": len(output_lfn("s:nn", 0, MAX_ATTEMPTS)) - 2,
               "log_dataset": len(log_lfn("s:nn", 0, MAX_ATTEMPTS)) - 2}
_TASK_ID = "9" * len(str(INT32_MAX))  # the widest id {task_id} can become (task.id is INTEGER)
_SUB_KEYS = {"datasets", "rses", "lifetime_s", "activity"}
_SCOPE_RE = re.compile(r"[A-Za-z0-9._-]{1,25}")  # Rucio's scope grammar and length
_PATTERN_RE = re.compile(r"[A-Za-z0-9._*-]{1,250}")
_ACTIVITY_RE = re.compile(r"[A-Za-z0-9 _-]{1,50}")
MAX_SUB_RSES = 10
MAX_LIFETIME_S = 10 * 365 * 86400


class TaskSpecError(ValueError):
    """The task spec is invalid; the message lists every problem."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_FIELD = re.compile(r"\{([^{}]*)\}")


def _check_dataset_template(text: str, what: str, errors: list[str]) -> None:
    """Only ``{task_id}`` may appear in an output or log dataset template."""
    if bad := sorted({f for f in _FIELD.findall(text) if f != "task_id"}):
        errors.append(f"{what}: unknown placeholders {bad}; allowed ['task_id']")


def _check_did(did: str, what: str, errors: list[str]) -> None:
    """``did`` (templates: with the widest ``{task_id}`` filled in) must be scope:name in the
    grammar, and (outputs) leave room for the file names made from it."""
    if what in _LFN_SUFFIX:
        did = did.replace("{task_id}", _TASK_ID)
    try:
        _, name = split_did(did)
    except ValueError as exc:
        errors.append(f"{what}: {exc}")
        return
    if what in _LFN_SUFFIX and len(name) + _LFN_SUFFIX[what] > MAX_LFN:
        errors.append(f"{what}: name is {len(name)} characters; at most "
                      f"{MAX_LFN - _LFN_SUFFIX[what]} so its file names fit in {MAX_LFN}")


def _check_subscription(sub: Any, errors: list[str]) -> dict[str, Any] | None:
    """The ``[subscription]`` table, normalized, or None (its problems in ``errors``)."""
    if not isinstance(sub, dict):
        errors.append("subscription must be a table {datasets = 'scope:pattern', rses = [...]}")
        return None
    bad = len(errors)
    if unknown := set(sub) - _SUB_KEYS:
        errors.append(f"subscription: unknown keys {sorted(unknown)}; known {sorted(_SUB_KEYS)}")
    scope, _, pattern = str(sub.get("datasets", "")).partition(":")
    if not isinstance(sub.get("datasets"), str) or not _SCOPE_RE.fullmatch(scope) \
            or not _PATTERN_RE.fullmatch(pattern):
        errors.append("subscription.datasets must be 'scope:pattern' (scope: up to 25 of "
                      "A-Z a-z 0-9 . _ -; pattern: up to 250 of those and *)")
    rses = sub.get("rses")
    if not isinstance(rses, list) or not 1 <= len(rses) <= MAX_SUB_RSES \
            or not all(isinstance(r, str) and 0 < len(r) <= 64 for r in rses) \
            or len(set(rses)) != len(rses):
        errors.append(f"subscription.rses must be a list of 1 to {MAX_SUB_RSES} distinct "
                      "endpoint names")
    lifetime = sub.get("lifetime_s")
    if lifetime is not None:
        _check_int(lifetime, "subscription.lifetime_s", 1, MAX_LIFETIME_S, errors)
    activity = sub.get("activity", "Production Input")
    if not isinstance(activity, str) or not _ACTIVITY_RE.fullmatch(activity):
        errors.append("subscription.activity must be up to 50 of A-Z a-z 0-9 space _ -")
    if len(errors) > bad:
        return None
    return {"scope": scope, "pattern": pattern, "rses": list(rses), "lifetime_s": lifetime,
            "activity": activity}


def _check_int(value: Any, what: str, lo: int, hi: int, errors: list[str]) -> bool:
    if not _is_int(value) or not lo <= value <= hi:
        errors.append(f"{what} must be a positive integer of at most {hi}" if lo == 1
                      else f"{what} must be an integer from {lo} to {hi}")
        return False
    return True


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
    for key in ("log_dataset", "owner", "share"):
        if spec.get(key) is not None and not isinstance(spec[key], str):
            errors.append(f"{key} must be a string, not {type(spec[key]).__name__}")
    inputs = spec.get("input_datasets")
    if not isinstance(inputs, list) or not inputs or not all(isinstance(d, str) for d in inputs):
        errors.append("input_datasets must be a non-empty list of 'scope:name'")
        inputs = []
    for did in inputs:
        if len(did) > MAX_LEN["output_dataset"]:
            errors.append(f"input dataset {did[:40]!r}... is longer than "
                          f"{MAX_LEN['output_dataset']} characters")
        else:
            _check_did(did, "input_datasets", errors)
    if isinstance(spec.get("transformation"), str) and spec["transformation"]:
        try:
            split_template(spec["transformation"])
        except TemplateError as exc:
            errors.append(str(exc))
    out_ds = spec.get("output_dataset") or ""
    log_ds = spec.get("log_dataset") or (f"{out_ds}.log" if out_ds else "")
    for key, value in (("output_dataset", out_ds), ("log_dataset", log_ds)):
        if isinstance(value, str) and value:
            _check_dataset_template(value, key, errors)
            expanded = len(value.replace("{task_id}", _TASK_ID))
            if expanded > MAX_LEN[key]:
                errors.append(f"{key} is {expanded} characters with {{task_id}} filled in; "
                              f"at most {MAX_LEN[key]}")
            else:
                _check_did(value, key, errors)
    for key in ("name", "owner", "share"):
        value = spec.get(key)
        if isinstance(value, str) and len(value) > MAX_LEN[key]:
            errors.append(f"{key} is {len(value)} characters; at most {MAX_LEN[key]}")
    split = spec.get("split", {"files_per_job": 1})
    if not isinstance(split, dict) or not split:
        errors.append("split must be a table with files_per_job and/or gb_per_job")
        split = {}
    for key, value in split.items():
        if key not in _SPLIT:
            errors.append(f"split: unknown rule {key!r}; known {sorted(_SPLIT)}")
        elif not isinstance(value, _SPLIT[key]) or isinstance(value, bool) \
                or not math.isfinite(value) or value <= 0:
            errors.append(f"split.{key} must be a positive number")
        elif key == "gb_per_job" and not 1 <= value * 1e9 <= MAX_BYTES:
            errors.append(f"split.gb_per_job = {value} must give from 1 byte to "
                          f"{MAX_BYTES / 1e9:.3g} GB per job")
        elif key == "files_per_job" and value > MAX_FILES_PER_JOB:
            errors.append(f"split.files_per_job must be at most {MAX_FILES_PER_JOB}")
    resources = dict(_RESOURCES)
    given = spec.get("resources")
    if given is not None and not isinstance(given, dict):
        errors.append("resources must be a table of "
                      + ", ".join(f"{k} = <int>" for k in _RESOURCES))
        given = {}
    for key, value in (given or {}).items():
        if key == "software":  # tags the queue must advertise (its sites-file `software`)
            if not isinstance(value, list) or len(value) > 50 or not all(
                    isinstance(t, str) and 0 < len(t) <= 128 for t in value):
                errors.append("resources.software must be a list of at most 50 tags of "
                              "1-128 characters")
            else:
                resources["software"] = sorted(set(value))
        elif key not in _RESOURCES:
            errors.append(f"resources: unknown key {key!r}; known "
                          f"{sorted([*_RESOURCES, 'software'])}")
        elif _check_int(value, f"resources.{key}", 1, INT32_MAX, errors):
            resources[key] = value
    given = spec.get("retry")
    if given is not None and not isinstance(given, dict):
        errors.append("retry must be a table {max_attempts = <int>}")
        given = {}
    retry = {"max_attempts": 3, **(given or {})}
    if unknown := set(retry) - {"max_attempts"}:
        errors.append(f"retry: unknown keys {sorted(unknown)}; known ['max_attempts']")
    _check_int(retry["max_attempts"], "retry.max_attempts", 1, MAX_ATTEMPTS, errors)
    priority = spec.get("priority", 500)
    _check_int(priority, "priority", INT32_MIN, INT32_MAX, errors)
    subscription = None
    if spec.get("subscription") is not None:
        subscription = _check_subscription(spec["subscription"], errors)
    if subscription and session is not None:
        known = set(session.scalars(select(StorageEndpoint.name).where(
            StorageEndpoint.name.in_(subscription["rses"]))))
        if missing := [r for r in subscription["rses"] if r not in known]:
            errors.append(f"subscription.rses: unknown endpoints {missing}")
    if not errors and ddm is not None and session is not None:
        for did in inputs:
            try:
                if not ddm.list_files(session, did):
                    errors.append(f"input dataset {did} is empty")
            except UnknownDataset as exc:
                errors.append(str(exc))
    if errors:
        raise TaskSpecError("invalid task spec: " + "; ".join(errors))
    return {"name": spec["name"], "owner": spec.get("owner") or "unknown",
            "transformation": spec["transformation"], "input_datasets": list(inputs),
            "output_dataset": out_ds, "log_dataset": log_ds, "split": split,
            "resources": resources, "retry": retry, "priority": priority,
            "share": spec.get("share") or "production", "subscription": subscription}


def submit(session: Session, spec: dict[str, Any], ddm: DDM, *, owner: str | None = None,
           now: datetime | None = None) -> Task:
    """Validate ``spec`` (inputs must exist in the DDM) and register the task; its
    ``[subscription]``, if any, is created in the DDM last (a refusal stores nothing)."""
    clean = validate(spec, ddm, session)
    sub = clean.pop("subscription")
    if owner:
        if len(owner) > MAX_LEN["owner"]:
            raise TaskSpecError(f"invalid task spec: owner is {len(owner)} characters; "
                                f"at most {MAX_LEN['owner']}")
        clean["owner"] = owner
    now = now or datetime.now(UTC)
    task = Task(state=TaskState.REGISTERED, created_at=now, updated_at=now, **clean)
    session.add(task)
    session.flush()
    task.output_dataset = task.output_dataset.replace("{task_id}", str(task.id))
    task.log_dataset = task.log_dataset.replace("{task_id}", str(task.id))
    errors: list[str] = []  # filled in, the names must still follow the grammar
    _check_did(task.output_dataset, "output_dataset", errors)
    _check_did(task.log_dataset, "log_dataset", errors)
    if errors:
        raise TaskSpecError("invalid task spec: " + "; ".join(errors))
    record_created(session, Entity.TASK, [(task.id, None)], TaskState.REGISTERED,
                   actor=f"user:{task.owner}"[:128], reason="submitted", now=now)
    if sub is not None:
        endpoints = tuple(session.scalar(select(StorageEndpoint).where(
            StorageEndpoint.name == r)) for r in sub["rses"])
        try:
            ddm.subscribe(session, Subscription(
                name=f"dawms.task{task.id}.{uuid.uuid4().hex[:12]}", scope=sub["scope"],
                pattern=sub["pattern"], endpoints=endpoints, activity=sub["activity"],
                lifetime_s=sub["lifetime_s"], comment=f"dawms task {task.id} {task.name}"))
        except DDMError as exc:
            raise TaskSpecError(f"invalid task spec: subscription: {exc}") from exc
    return task
