"""Sites, queues and storage endpoints from a versioned TOML file.

Operators never edit these tables by hand (PanDA's ``schedconfig`` lesson):
``dawms sites sync FILE`` parses and validates the file, shows the diff against
the catalog and applies it in one transaction, recording who changed what and
when in ``config_change``. The file looks like::

    [[site]]
    name = "CERN"

    [[endpoint]]
    name = "CERN_DISK"
    site = "CERN"
    kind = "disk"                      # disk | tape
    url = "file:///data/cern/disk"     # file:// root:// s3:// gs:// davs:// https://
    rse = "CERN-PROD_DATADISK"         # its Rucio RSE in Rucio mode (default: its name)

    [[endpoint]]                       # a tape: the carousel stages from it
    name = "CERN_TAPE"
    site = "CERN"
    kind = "tape"
    url = "file:///data/cern/tape"
    staging_buffer = "CERN_DISK"       # the disk it stages to (default: a disk of its site)
    staging_max_files = 10000          # files queued + staging from this tape (PanDA: 10000)
    staging_max_bytes = 50000000000000 # the same in bytes (default: no limit)
    staging_max_percent = 50           # of that, the most that may be staging at once (50)

    [[queue]]
    name = "CERN_PROD"
    site = "CERN"
    read_endpoints = ["CERN_DISK"]     # in order of preference
    write_endpoint = "CERN_DISK"
    cores = 8
    memory_mb = 16000
    movers = { read = ["file"], write = ["file"] }
    software = ["root-6.30", "atlas-24.0"]  # tags a task's resources.software must find

An endpoint may carry ``blacklisted = true``: the broker then sends no job to a
queue that reads from or writes to it (PanDA's blacklisted DDM endpoints).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from .models import ConfigChange, Queue, Replica, Site, StorageEndpoint
from .states import QueueStatus

QUEUE_STATUSES = tuple(QueueStatus)
ENDPOINT_KINDS = ("disk", "tape")
URL_SCHEMES = ("file", "root", "s3", "gs", "davs", "https", "http")

_SITE_KEYS = {"name": str, "description": str}
_ENDPOINT_KEYS = {"name": str, "site": str, "kind": str, "url": str, "quota_bytes": int,
                  "rse": str, "staging_buffer": str, "staging_max_files": int,
                  "staging_max_bytes": int, "staging_max_percent": int, "blacklisted": bool}
_TAPE_ONLY = ("staging_buffer", "staging_max_files", "staging_max_bytes", "staging_max_percent")
INT32_MAX, INT64_MAX = 2**31 - 1, 2**63 - 1
# Rucio's RSE name grammar (rucio.common.schema: upper case, digits, _ and -)
_RSE_NAME = re.compile(r"^[A-Z0-9_-]{1,64}$")
_QUEUE_KEYS = {
    "name": str, "site": str, "status": str, "cores": int, "memory_mb": int,
    "max_walltime_s": int, "max_disk_mb": int, "max_running": int, "max_queued": int,
    "pilot_backend": str, "backend_settings": dict, "read_endpoints": list,
    "write_endpoint": str, "movers": dict, "direct_access": bool, "software": list,
}

_POSITIVE = {"cores", "memory_mb", "max_walltime_s", "max_disk_mb", "max_running", "max_queued",
             "quota_bytes", "staging_max_files", "staging_max_bytes", "staging_max_percent"}
# the widest value each integer key's column holds (BIGINT for bytes, INTEGER otherwise)
_MAX_INT = {"quota_bytes": INT64_MAX, "staging_max_files": INT32_MAX,
            "staging_max_bytes": INT64_MAX, "staging_max_percent": 100}


class ConfigError(ValueError):
    """The site file is invalid; nothing was applied."""


@dataclass(frozen=True)
class Change:
    op: str  # add | change | remove
    kind: str  # site | endpoint | queue
    name: str
    fields: dict[str, Any]

    def __str__(self) -> str:
        sign = {"add": "+", "change": "~", "remove": "-"}[self.op]
        detail = ", ".join(f"{k}: {v}" for k, v in self.fields.items())
        return f"{sign} {self.kind} {self.name}" + (f" ({detail})" if detail else "")


def load(path: str | Path) -> dict[str, list[dict[str, Any]]]:
    """Parse and validate a site file; raises ConfigError naming every problem."""
    try:
        raw = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    return validate(raw, str(path))


def validate(raw: dict[str, Any], where: str = "config") -> dict[str, list[dict[str, Any]]]:
    errors: list[str] = []
    unknown = set(raw) - {"site", "endpoint", "queue"}
    if unknown:
        errors.append(f"unknown sections {sorted(unknown)}")
    out: dict[str, list[dict[str, Any]]] = {}
    for kind, keys in (("site", _SITE_KEYS), ("endpoint", _ENDPOINT_KEYS),
                       ("queue", _QUEUE_KEYS)):
        items = raw.get(kind, [])
        if not isinstance(items, list):
            errors.append(f"{kind} must be an array of tables ([[{kind}]]), not a single table")
            items = []
        if bad := [i for i, item in enumerate(items) if not isinstance(item, dict)]:
            errors.append(f"{kind} entries {bad} are not tables")
            items = [item for item in items if isinstance(item, dict)]
        seen: set[str] = set()
        for i, item in enumerate(items):
            label = f"{kind}[{i}] {item.get('name', '?')}"
            if not isinstance(item.get("name"), str) or not item["name"]:
                errors.append(f"{label}: needs a name")
            elif item["name"] in seen:
                errors.append(f"{label}: defined twice")
            seen.add(item.get("name", ""))
            for key, value in item.items():
                if key not in keys:
                    errors.append(f"{label}: unknown key {key!r}")
                elif not isinstance(value, keys[key]) or (
                        keys[key] is int and isinstance(value, bool)):
                    errors.append(f"{label}: {key} must be {keys[key].__name__}")
                elif key in _POSITIVE and value <= 0:
                    errors.append(f"{label}: {key} must be positive")
                elif key in _MAX_INT and value > _MAX_INT[key]:
                    errors.append(f"{label}: {key} must be at most {_MAX_INT[key]}")
        out[kind] = items
    sites = {s.get("name") for s in out["site"]}
    endpoints = {e.get("name") for e in out["endpoint"]}
    kinds = {e.get("name"): e.get("kind", "disk") for e in out["endpoint"]}
    for e in out["endpoint"]:
        if e.get("site") not in sites:
            errors.append(f"endpoint {e.get('name')}: unknown site {e.get('site')!r}")
        if e.get("kind", "disk") not in ENDPOINT_KINDS:
            errors.append(f"endpoint {e.get('name')}: kind must be one of {ENDPOINT_KINDS}")
        if e.get("kind", "disk") != "tape" and (given := [k for k in _TAPE_ONLY if k in e]):
            errors.append(f"endpoint {e.get('name')}: {given} apply to tape endpoints only")
        buffer = e.get("staging_buffer")
        if buffer is not None and kinds.get(buffer) != "disk":
            errors.append(f"endpoint {e.get('name')}: staging_buffer {buffer!r} must be a disk "
                          "endpoint of this file")
        if "rse" in e and not _RSE_NAME.match(str(e["rse"])):
            errors.append(f"endpoint {e.get('name')}: rse must be an RSE name (A-Z, 0-9, _, -; "
                          "at most 64)")
        scheme = str(e.get("url", "")).split("://", 1)[0]
        if "://" not in str(e.get("url", "")) or scheme not in URL_SCHEMES:
            errors.append(f"endpoint {e.get('name')}: url must start with one of "
                          f"{[s + '://' for s in URL_SCHEMES]}")
    for q in out["queue"]:
        name = q.get("name")
        if q.get("site") not in sites:
            errors.append(f"queue {name}: unknown site {q.get('site')!r}")
        if q.get("status", QueueStatus.ONLINE) not in QUEUE_STATUSES:
            errors.append(f"queue {name}: status must be one of {QUEUE_STATUSES}")
        for ep in [*q.get("read_endpoints", []), q.get("write_endpoint", "")]:
            if ep and ep not in endpoints:
                errors.append(f"queue {name}: unknown endpoint {ep!r}")
        if not all(isinstance(t, str) and 0 < len(t) <= 128 for t in q.get("software", [])) \
                or len(q.get("software", [])) > 1000:
            errors.append(f"queue {name}: software must be at most 1000 tags of 1-128 "
                          "characters")
        if not q.get("read_endpoints") or not q.get("write_endpoint"):
            errors.append(f"queue {name}: needs read_endpoints and write_endpoint")
        elif not any(kinds.get(ep) == "disk" for ep in q["read_endpoints"]):
            errors.append(f"queue {name}: read_endpoints need a disk endpoint (jobs read "
                          "from disk; tape is staged to disk first)")
    if errors:
        raise ConfigError(f"{where}: " + "; ".join(errors))
    return out


def _site_row(s: dict[str, Any]) -> dict[str, Any]:
    return {"description": s.get("description", "")}


def _endpoint_row(e: dict[str, Any], site_ids: dict[str, int]) -> dict[str, Any]:
    return {"site_id": site_ids[e["site"]], "kind": e.get("kind", "disk"),
            "url_prefix": e["url"].rstrip("/"), "quota_bytes": e.get("quota_bytes"),
            "rse": e.get("rse", ""), "blacklisted": int(bool(e.get("blacklisted", False))),
            **{k: e.get(k) for k in _TAPE_ONLY}}


def _queue_row(q: dict[str, Any], site_ids: dict[str, int]) -> dict[str, Any]:
    defaults = {c.name: c.default.arg for c in Queue.__table__.columns
                if c.default is not None and not callable(c.default.arg)}
    row = {k: q.get(k, defaults.get(k)) for k in _QUEUE_KEYS if k not in ("name", "site")}
    row["direct_access"] = int(bool(q.get("direct_access", False)))
    row["backend_settings"] = q.get("backend_settings", {})
    row["movers"] = q.get("movers", {"read": ["file"], "write": ["file"]})
    row["software"] = sorted(set(q["software"])) if q.get("software") else None
    row["site_id"] = site_ids[q["site"]]
    return row


def _diff_fields(obj: Any, row: dict[str, Any]) -> dict[str, Any]:
    return {k: f"{getattr(obj, k)!r} -> {v!r}" for k, v in row.items() if getattr(obj, k) != v}


def sync(session: Session, config: dict[str, list[dict[str, Any]]], *, actor: str,
         source: str) -> list[Change]:
    """Make the catalog match ``config``; returns the changes made in ``session``.

    Runs inside the caller's transaction, so the whole diff lands or none of it.
    Queues missing from the file are set ``offline`` (jobs refer to them);
    endpoints and sites missing from it are removed unless still in use.
    """
    changes: list[Change] = []
    sites = {s.name: s for s in session.scalars(select(Site))}
    for s in config["site"]:
        row = _site_row(s)
        if s["name"] not in sites:
            changes.append(Change("add", "site", s["name"], row))
            obj = Site(name=s["name"], **row)
            session.add(obj)
            sites[s["name"]] = obj
        elif fields := _diff_fields(sites[s["name"]], row):
            changes.append(Change("change", "site", s["name"], fields))
            for k, v in row.items():
                setattr(sites[s["name"]], k, v)
    session.flush()
    site_ids = {n: s.id for n, s in sites.items()}

    for kind, model, items, to_row in (
        ("endpoint", StorageEndpoint, config["endpoint"], _endpoint_row),
        ("queue", Queue, config["queue"], _queue_row),
    ):
        existing = {o.name: o for o in session.scalars(select(model))}
        for item in items:
            row = to_row(item, site_ids)
            obj = existing.pop(item["name"], None)
            if obj is None:
                changes.append(Change("add", kind, item["name"], row))
                session.add(model(name=item["name"], **row))
            elif fields := _diff_fields(obj, row):
                changes.append(Change("change", kind, item["name"], fields))
                for k, v in row.items():
                    setattr(obj, k, v)
        for name, obj in existing.items():
            if kind == "queue":
                if obj.status != "offline":
                    changes.append(Change("remove", kind, name, {"status": "-> 'offline'"}))
                    obj.status = "offline"
            else:
                used = session.scalar(select(Replica.id).where(Replica.endpoint_id == obj.id)
                                      .limit(1))
                if used is not None:
                    raise ConfigError(f"endpoint {name} still holds replicas; "
                                      "keep it in the file (it cannot be removed)")
                changes.append(Change("remove", kind, name, {}))
                session.delete(obj)
    session.flush()
    keep = {s["name"] for s in config["site"]}
    for name, obj in sites.items():
        if name not in keep:
            if session.scalar(select(Queue.id).where(Queue.site_id == obj.id).limit(1)):
                raise ConfigError(f"site {name} still has queues; keep it in the file")
            changes.append(Change("remove", "site", name, {}))
            session.delete(obj)
    if changes:
        session.add(ConfigChange(actor=actor, source=source,
                                 diff=[str(c) for c in changes]))
    session.flush()
    return changes
