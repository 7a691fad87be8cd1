"""The wire records and the one table of pilot states, tested from the tables.

Everything here is generated: the states a record accepts from ``PILOT_REPORTABLE``,
what the server does with a report from ``PILOT_REPORT_PATHS`` (every current
state against every reported one, on SQLite and PostgreSQL), valid and malformed
inputs from each record's fields and bounds, and the agreement of the server's
pydantic models with the records, field by field and value by value.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import typing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError
from sqlalchemy import select
from test_states import World, new_row

from dawms import wire
from dawms.catalog.db import Database
from dawms.catalog.models import Job, StateHistory, Task
from dawms.catalog.states import (
    JOB_FINAL,
    JOB_TRANSITIONS,
    JOB_WITH_PILOT,
    PILOT_REPORT_PATHS,
    PILOT_REPORTABLE,
    Entity,
    JobState,
)
from dawms.ddm_bridge.local import LocalDDM
from dawms.scheduler import broker, refiner
from dawms.scheduler.config import SchedulerConfig
from dawms.scheduler.report import BadReport, StaleReport, pilot_update
from dawms.scheduler.task import submit
from dawms.server import commands, schemas
from dawms.wire import fields as wire_fields
from dawms.wire import job as wire_job
from dawms.wire import names as wire_names
from factories import claim, make_dataset

NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
RECORDS: list[type[wire.Record]] = [
    wire.InputFile, wire.OutputSpec, wire.Movers, wire.JobSpec, wire.AcquireRequest,
    wire.AcquireReply, wire.OutputReport, wire.BadReplicaReport, wire.JobReport,
    wire.UpdateReply, wire.BulkUpdate, wire.BulkResult, wire.CommandQuery,
]
# the server's pydantic body models and the record each one describes
MODELS: dict[type[BaseModel], type[wire.Record]] = {
    schemas.AcquireJobs: wire.AcquireRequest, schemas.OutputFile: wire.OutputReport,
    schemas.BadReplica: wire.BadReplicaReport,
    schemas.JobUpdate: wire.JobReport, schemas.JobUpdates: wire.BulkUpdate,
    commands.CommandQuery: wire.CommandQuery,
}
RECORD_IDS = [r.__name__ for r in RECORDS]


# ----------------------------------------------------------------- examples from fields
# per pattern a record uses: a valid value, and values that break only the pattern
PATTERN_VALUES: dict[str, tuple[str, list[str]]] = {
    wire_job.ADLER32: ("0a1b2c3d", ["zzzzzzzz", "0a1b2c3d0"]),
    wire_job.URL_PREFIX: ("file:///data", ["/data", "file:///a b", "1x://h/p"]),
    wire_names.NAME_PATTERN: ("a0.b_c-d", ["../x", ".hidden", "a..b", "a/b", "-rf", "x;y"]),
}


def example(cls: type[wire.Record]) -> dict[str, Any]:
    """The smallest valid input of a record, built from its fields' types and bounds."""
    return {f.name: _value(wire_fields.field_types(cls)[f.name], f.metadata)
            for f in dataclasses.fields(cls)}


def _value(hint: Any, rules: Any) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, __import__("types").UnionType):
        return _value(next(a for a in args if a is not type(None)), rules)
    if isinstance(hint, type) and issubclass(hint, wire.Record):
        return example(hint)
    if origin is list:
        return [_value(args[0], rules.get("item", {}))]
    if origin is dict:
        return {"k": _value(args[1], rules.get("item", {}))}
    if hint is bool:
        return True
    if hint in (int, float):
        return max(rules.get("ge", 1), 1) if rules.get("le", 1) >= 1 else rules["le"]
    if "choices" in rules:
        return rules["choices"][-1]
    if "pattern" in rules:
        return PATTERN_VALUES[rules["pattern"].pattern][0]
    return "x" * max(rules.get("min_length", 0), 1)


def malformed(cls: type[wire.Record]) -> list[tuple[str, dict[str, Any]]]:
    """(field, input) pairs that break exactly one rule of one field of ``cls``."""
    base = example(cls)
    hints = wire_fields.field_types(cls)
    cases: list[tuple[str, dict[str, Any]]] = [("", {**base, "no_such_field": 1})]
    for f in dataclasses.fields(cls):
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if required:
            cases.append((f.name, {k: v for k, v in base.items() if k != f.name}))
        cases += [(f.name, {**base, f.name: bad})
                  for bad in _bad_values(hints[f.name], f.metadata, base[f.name])]
    return cases


def _bad_values(hint: Any, rules: Any, good: Any) -> list[Any]:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    optional = origin in (typing.Union, __import__("types").UnionType)
    if optional:
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    bad: list[Any] = [] if optional else [None]
    if isinstance(hint, type) and issubclass(hint, wire.Record):
        return [*bad, "x", [good]]
    if origin is list:
        bad += ["x", {"a": 1}, [None]]
        if "max_length" in rules:
            bad.append([good[0]] * (rules["max_length"] + 1))
        item = rules.get("item", {})
        bad += [[v] for v in _bad_values(args[0], item, good[0]) if v is not None]
        return bad
    if origin is dict:
        key_max = rules.get("key_max_length", wire_fields.MAP_KEY_MAX)
        bad += ["x", [1], {"": 1}, {"k" * (key_max + 1): 1}]
        if "max_length" in rules:
            bad.append({f"k{i}": good["k"] for i in range(rules["max_length"] + 1)})
        bad += [{"k": v} for v in _bad_values(args[1], rules.get("item", {}), good["k"])
                if v is not None]
        return bad
    if hint is bool:
        return [*bad, 1, "true"]
    if hint in (int, float):
        bad += [True, "1", [1]]
        if hint is int:
            bad.append(1.5)
        else:
            bad += [float("nan"), float("inf")]
        step = (lambda bound: 1) if hint is int else (lambda bound: max(1.0, abs(bound)))
        if "ge" in rules:
            bad.append(rules["ge"] - step(rules["ge"]))
        if "le" in rules:
            bad.append(rules["le"] + step(rules["le"]))
        return bad
    bad += [1, ["x"]]
    if "max_length" in rules:
        bad.append("x" * (rules["max_length"] + 1))
    if rules.get("min_length", 0) > 0:
        bad.append("")
    if "pattern" in rules:
        bad += PATTERN_VALUES[rules["pattern"].pattern][1]
    if "choices" in rules:
        bad.append("no-such-choice")
    return bad


# ----------------------------------------------------------------- the table of states
@pytest.mark.parametrize("state", list(JobState), ids=[s.value for s in JobState])
def test_a_report_of_a_reportable_state_is_accepted_and_of_any_other_refused(
        state: JobState) -> None:
    body = {**example(wire.JobReport), "state": state.value}
    body_model = {**body, "outputs": []}
    if state in PILOT_REPORTABLE:
        assert wire.JobReport.from_dict(body).state == state
        schemas.JobUpdate.model_validate(body_model)
    else:
        with pytest.raises(wire.WireError, match=f"job report.state: '{state.value}' is not"):
            wire.JobReport.from_dict(body)
        with pytest.raises(ValidationError):
            schemas.JobUpdate.model_validate(body_model)


def test_the_wire_states_are_the_catalog_table() -> None:
    assert set(wire.REPORTABLE_STATES) == {s.value for s in PILOT_REPORTABLE}
    assert set(wire.FINAL_REPORT_STATES) == {s.value for s in PILOT_REPORTABLE & JOB_FINAL}


def test_every_report_path_is_a_chain_of_allowed_transitions() -> None:
    for (current, reported), path in PILOT_REPORT_PATHS.items():
        assert current in JOB_WITH_PILOT and reported in PILOT_REPORTABLE
        if not path:
            assert current == reported, "only a heartbeat takes no step"
            continue
        assert path[-1] == reported
        for src, dst in itertools.pairwise((current, *path)):
            assert dst in JOB_TRANSITIONS[src], f"{src} -> {dst} in the path of {reported}"
    # every state a pilot holds can fail and can heartbeat in the states it reports
    assert {c for c, r in PILOT_REPORT_PATHS if r == JobState.FAILED} == JOB_WITH_PILOT


PAIRS = [(c, r) for c in JobState if c not in JOB_FINAL for r in JobState]


def test_the_server_applies_every_report_as_the_table_says(db: Database) -> None:
    """Every non-final current state against every reported state: refused as bad if
    the state is not reportable, applied step by step (one history row each) if the
    table has a path, refused as stale otherwise; a refusal changes nothing."""
    ddm = LocalDDM()
    with db.session() as s:
        world = World(s)
        s.get(Task, world.task_id).retry = {"max_attempts": 1}  # a failure ends the job
        rows = {pair: new_row(s, Entity.JOB, pair[0], world, attempt=1, lease_token=f"t{i}",
                              pilot_id="p")
                for i, pair in enumerate(PAIRS)}
    outcomes = {"bad": 0, "stale": 0, "applied": 0}
    for (current, reported), job_id in rows.items():
        report = {"job_id": job_id, "attempt": 1,
                  "lease_token": f"t{PAIRS.index((current, reported))}", "state": reported.value}
        path = PILOT_REPORT_PATHS.get((current, reported))
        with db.session() as s:
            if reported not in PILOT_REPORTABLE:
                with pytest.raises(BadReport, match="may report"):
                    pilot_update(s, ddm, report, now=NOW)
                outcome = "bad"
            elif path is None:
                with pytest.raises(StaleReport, match="does not follow"):
                    pilot_update(s, ddm, report, now=NOW)
                outcome = "stale"
            else:
                assert pilot_update(s, ddm, report, now=NOW) == {"command": None}
                outcome = "applied"
        outcomes[outcome] += 1
        with db.session() as s:
            state = s.scalar(select(Job.state).where(Job.id == job_id))
            steps = list(s.scalars(select(StateHistory.to_state).where(
                StateHistory.entity == "job", StateHistory.entity_id == job_id,
                StateHistory.from_state != "").order_by(StateHistory.id)))
        want = list(path or ()) if outcome == "applied" else []
        assert steps == want, (current, reported)
        assert state == (want[-1] if want else current), (current, reported)
    assert outcomes == {
        "bad": len([p for p in PAIRS if p[1] not in PILOT_REPORTABLE]),
        "applied": len([p for p in PAIRS if p in PILOT_REPORT_PATHS]),
        "stale": len([p for p in PAIRS if p[1] in PILOT_REPORTABLE
                      and p not in PILOT_REPORT_PATHS]),
    }
    assert outcomes["stale"] > 0 and outcomes["applied"] == len(PILOT_REPORT_PATHS)


# ----------------------------------------------------------------- records
def test_the_spec_the_server_hands_out_is_a_job_spec(
        db: Database, sites: list[str], tmp_path: Path) -> None:
    """Built as a record at brokerage, stored, claimed: the pilot's parse gives it back."""
    ddm = LocalDDM()
    make_dataset(db, ddm, "w:raw", "SITE_A_DISK", 3, tmp_path)
    with db.session() as s:
        submit(s, {"name": "w", "transformation": "true {inputs} {output}",
                   "input_datasets": ["w:raw"], "output_dataset": "w:out.{task_id}",
                   "split": {"files_per_job": 2}}, ddm)
    refiner.run_once(db, ddm)
    broker.run_once(db, ddm, SchedulerConfig())
    claimed = claim(db, NOW)
    assert len(claimed) == 2
    for fence, stored in claimed.values():
        handed = {**stored, **fence}  # what acquire_jobs sends
        spec = wire.JobSpec.from_dict(handed)
        assert spec.to_dict() == handed
        assert spec.lease_token == fence["lease_token"] and spec.inputs and spec.log
        assert all(i.urls and len(i.adler32) == 8 for i in spec.inputs)
        assert spec.movers == wire.Movers(read=["file"], write=["file"])


@pytest.mark.parametrize("cls", RECORDS, ids=RECORD_IDS)
def test_records_round_trip(cls: type[wire.Record]) -> None:
    data = example(cls)
    record = cls.from_dict(data)
    assert record.to_dict() == data
    assert cls.from_dict(json.loads(json.dumps(record.to_dict()))) == record


def test_a_job_specs_endpoints_are_names_to_url_prefixes() -> None:
    """``endpoints``: keys as long as the catalog's endpoint names, values scheme://..."""
    base = example(wire.JobSpec)
    name = "E" * wire_job.ENDPOINT_NAME_MAX  # longer than other maps' keys may be
    spec = wire.JobSpec.from_dict({**base, "endpoints": {name: "file:///data/site"}})
    assert spec.endpoints == {name: "file:///data/site"}
    for bad, fragment in [({name + "E": "file:///d"}, "keys must be strings of 1 to 128"),
                          ({"S": "/data/site"}, "does not match"),
                          ({"S": "file:///a b"}, "does not match"),
                          ({"S": ""}, "does not match"),
                          ({"S": "file:///" + "d" * wire_job.URL_MAX}, "characters"),
                          ({f"S{i}": "file:///d" for i in range(wire_job.ENDPOINTS_MAX + 1)},
                           "entries")]:
        with pytest.raises(wire.WireError, match=fragment) as err:
            wire.JobSpec.from_dict({**base, "endpoints": bad})
        assert str(err.value).startswith("job spec.endpoints"), err.value


@pytest.mark.parametrize("lfn", ["../x", "a/b", ".hidden", "a..b", "-rf", "x;y", "$(id)", "l",
                                 "n" * 251])
def test_a_reported_output_name_follows_the_catalogs_grammar(lfn: str) -> None:
    good = {"lfn": "out.1", "type": "out", "size": 1, "adler32": "00000001"}
    assert wire.OutputReport.from_dict(good).lfn == "out.1"
    with pytest.raises(wire.WireError, match=r"^output\.lfn: "):
        wire.OutputReport.from_dict({**good, "lfn": lfn})
    with pytest.raises(ValidationError):
        schemas.OutputFile.model_validate({**good, "lfn": lfn})


def test_a_full_job_spec_round_trips_and_defaults_fill_in() -> None:
    spec = wire.JobSpec(
        job_id=12, attempt=2, lease_token="9f" * 16, task_id=3, job_name="demo.reco.3._000004",
        transformation="python3 x.py {inputs} {output}", memory_mb=2000, walltime_s=3600,
        heartbeat_s=30, inputs=[wire.InputFile(scope="demo", lfn="raw._1", size=4096,
                                               adler32="0a1b2c3d", urls=["file:///s/raw._1"])],
        outputs=[wire.OutputSpec(scope="demo", lfn="reco._1", dataset="demo:reco",
                                 url="file:///d/reco._1")],
        log=wire.OutputSpec(scope="demo", lfn="reco._1.log.tgz", dataset="demo:reco.log",
                            url="file:///d/reco._1.log.tgz"),
        movers=wire.Movers(read=["root", "file"], write=["file"]))
    assert wire.JobSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert spec.claimed(3, "tok").to_dict() == {**spec.to_dict(), "attempt": 3,
                                                "lease_token": "tok"}
    assert spec.movers.for_log() == ["file"]
    minimal = wire.JobSpec.from_dict({k: v for k, v in spec.to_dict().items()
                                      if k in ("job_id", "attempt", "task_id", "job_name",
                                               "transformation", "memory_mb", "walltime_s",
                                               "heartbeat_s")})
    assert (minimal.cores, minimal.inputs, minimal.log, minimal.movers) == (1, [], None,
                                                                           wire.Movers())


@pytest.mark.parametrize("cls", RECORDS, ids=RECORD_IDS)
def test_malformed_input_is_refused_with_an_error_naming_the_field(
        cls: type[wire.Record]) -> None:
    cases = malformed(cls)
    assert len(cases) > len(dataclasses.fields(cls))
    for name, data in cases:
        with pytest.raises(wire.WireError) as err:
            cls.from_dict(data)
        where = f"{cls.WHAT}.{name}" if name else f"{cls.WHAT}: unknown field"
        assert str(err.value).startswith(where), (name, data, str(err.value))
    for not_an_object in (None, [], "x", 1):
        with pytest.raises(wire.WireError, match=f"{cls.WHAT}: must be an object"):
            cls.from_dict(not_an_object)


def test_every_field_is_bounded() -> None:
    """No unbounded number, string, list or map can cross the wire."""
    for cls in RECORDS:
        for f in dataclasses.fields(cls):
            hint = wire_fields.field_types(cls)[f.name]
            args = typing.get_args(hint)
            base = next((a for a in args if a is not type(None)), hint) \
                if typing.get_origin(hint) not in (list, dict) else hint
            kind = typing.get_origin(base) or base
            rules = f.metadata
            where = f"{cls.__name__}.{f.name}"
            if kind in (int, float):
                assert "ge" in rules and "le" in rules, where
            elif kind is str:
                assert {"max_length", "choices", "pattern"} & set(rules), where
            elif kind in (list, dict):
                assert "max_length" in rules, where
                item = typing.get_args(base)[-1]
                if item in (str, int, float):
                    assert rules.get("item"), f"{where} items"


def test_the_pilots_report_helpers_build_records() -> None:
    from dawms.pilot.client import JobRef, update_body

    report = update_body(JobRef(5, 2, "tok"), "failed", error_category="stagein",
                         error_diag="x" * 10_000,
                         outputs=[wire.OutputReport(lfn="j.log", type="log", size=1,
                                                    adler32="00000001")])
    assert isinstance(report, wire.JobReport)
    assert len(report.error_diag) == 4000  # cut to the bound, not refused
    with pytest.raises(wire.WireError, match="error_category"):
        update_body(JobRef(5, 2, "tok"), "failed", error_category="bad-luck")
    with pytest.raises(wire.WireError, match="job_id"):
        JobRef.of({"job_id": "5", "attempt": 1, "lease_token": "t"})
    assert JobRef.of({"job_id": 5, "attempt": 1, "lease_token": "t", "junk": []}) == \
        JobRef(5, 1, "t")


def test_the_kill_command_is_one_string() -> None:
    from dawms.scheduler import kill

    assert kill.KILL == wire.Command.KILL == "tobekilled"
    assert wire.UpdateReply.from_dict({"command": "tobekilled"}).command == wire.Command.KILL
    with pytest.raises(wire.WireError, match="update reply.command"):
        wire.UpdateReply.from_dict({"command": "rm -rf"})


# ----------------------------------------------------------------- pydantic agreement
def _record_shape(cls: type[wire.Record]) -> dict[str, Any]:
    shape = {}
    for f in dataclasses.fields(cls):
        hint = wire_fields.field_types(cls)[f.name]
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        default = None if required else (f.default if f.default is not dataclasses.MISSING
                                         else f.default_factory())
        shape[f.name] = (required, _dump(default), _record_type(hint, f.metadata))
    return shape


def _record_type(hint: Any, rules: Any) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, __import__("types").UnionType):
        return ("optional", _record_type(next(a for a in args if a is not type(None)), rules))
    if isinstance(hint, type) and issubclass(hint, wire.Record):
        return ("record", hint.__name__)
    bounds = _norm({k: v for k, v in rules.items() if k in ("ge", "le", "min_length",
                                                          "max_length", "pattern")})
    if origin is list:
        return ("list", bounds, _record_type(args[0], rules.get("item", {})))
    if origin is dict:
        key = ("str", _norm({"min_length": 1, "max_length": wire_fields.MAP_KEY_MAX}))
        return ("dict", bounds, key, _record_type(args[1], rules.get("item", {})))
    if "choices" in rules:
        return ("choices", frozenset(rules["choices"]))
    return (hint.__name__, bounds)


def _model_shape(model: type[BaseModel]) -> dict[str, Any]:
    shape = {}
    for name, info in model.model_fields.items():
        required = info.is_required()
        default = None if required else info.get_default(call_default_factory=True)
        shape[name] = (required, _dump(default), _model_type(info.annotation, info.metadata))
    return shape


def _model_type(hint: Any, metadata: list[Any]) -> Any:
    if typing.get_origin(hint) is typing.Annotated:
        base, *extra = typing.get_args(hint)
        return _model_type(base, [*metadata, *(m for e in extra for m in e.metadata)])
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, __import__("types").UnionType) and set(args) == {int, float}:
        return _model_type(float, metadata)  # a number: the record's float takes ints too
    if origin in (typing.Union, __import__("types").UnionType):
        return ("optional", _model_type(next(a for a in args if a is not type(None)), metadata))
    if isinstance(hint, type) and issubclass(hint, BaseModel):
        return ("record", MODELS[hint].__name__)
    if origin is typing.Literal:
        return ("choices", frozenset(args))
    bounds = {}
    for m in metadata:
        for key in ("ge", "le", "min_length", "max_length", "pattern"):
            if getattr(m, key, None) is not None:
                bounds[key] = getattr(m, key)
    bounds = _norm(bounds)
    if origin is list:
        return ("list", bounds, _model_type(args[0], []))
    if origin is dict:
        return ("dict", bounds, _model_type(args[0], []), _model_type(args[1], []))
    return (hint.__name__, bounds)


def _norm(bounds: dict[str, Any]) -> frozenset:
    out = dict(bounds)
    if out.get("min_length") == 0:
        del out["min_length"]
    if "pattern" in out:
        pattern = getattr(out["pattern"], "pattern", out["pattern"])
        out["pattern"] = pattern.removeprefix("^").removesuffix("$")
    return frozenset(out.items())


def _dump(value: Any) -> Any:
    if isinstance(value, wire.Record | BaseModel):
        return "record"
    return value


@pytest.mark.parametrize("model", list(MODELS), ids=[m.__name__ for m in MODELS])
def test_the_servers_models_describe_the_records(model: type[BaseModel]) -> None:
    assert _model_shape(model) == _record_shape(MODELS[model])
    assert model.model_config.get("extra") == "forbid"


@pytest.mark.parametrize("model", list(MODELS), ids=[m.__name__ for m in MODELS])
def test_the_servers_models_accept_and_refuse_what_the_records_do(
        model: type[BaseModel]) -> None:
    record = MODELS[model]
    good = example(record)
    assert model.model_validate(good).model_dump() == record.from_dict(good).to_dict()
    for name, data in malformed(record):
        with pytest.raises(ValidationError):
            model.model_validate(data)
        assert name is not None
