"""Payload commands cannot be injected: argv first, placeholders per argument, no shell.

Unit level: ``build_command`` on hostile names (``;``, ``$()``, backticks, a name
that is itself ``{output}``) and on quoted templates. Then REAL payload processes
and a REAL ``dawms-pilot`` process fed by a (stub) server: nothing runs that was
not meant to (marker files that an injected command would create never appear),
and nothing is substituted twice.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pilot_helpers import StubServer
from security_helpers import final_report, run_pilot

from dawms.pilot.payload import STDOUT_NAME, PayloadError, build_command, run_payload
from dawms.scheduler.task import TaskSpecError, validate
from dawms.wire.command import TemplateError, split_template

pytestmark = pytest.mark.security

# each would create a file named PWNED* if a shell ever interpreted it
HOSTILE = ["a;touch PWNED1;", "$(touch PWNED2)", "`touch PWNED3`", "x' ; touch PWNED4 ; '",
           '"; touch PWNED5; "', "{output}", "{inputs}", "-rf", "a\nb"]
QUOTED_TEMPLATES = [
    "sh -c 'cat {inputs} > {output}'",
    'sh -c "cat {inputs} > {output}"',
    "bash -c 'cp {output} /tmp'",
    "python3 -c 'open(\"{output}\", \"w\")'",
    "sh -c 'echo {job_id}; touch {output}'",
    "run --in={inputs}",
    "run {outputs}.x",
]


def _no_pwned(*roots: Path) -> None:
    for root in roots:
        assert not list(root.rglob("PWNED*")), "an injected command ran"


def test_hostile_names_stay_single_inert_arguments() -> None:
    argv = build_command("prog --out {output} {inputs} --job {job_id}.{attempt}",
                         inputs=HOSTILE, outputs=["{inputs}"], job_id=7, attempt=2)
    assert argv == ["prog", "--out", "{inputs}", *HOSTILE, "--job", "7.2"]


def test_a_name_is_never_substituted_twice() -> None:
    argv = build_command("prog {output} --out={output} {outputs}",
                         inputs=[], outputs=["{output}", "{job_id}"], job_id=1, attempt=1)
    assert argv == ["prog", "{output}", "--out={output}", "{output}", "{job_id}"]
    argv = build_command("prog --out={output} -j {job_id}", inputs=[],
                         outputs=["{job_id}.{attempt}"], job_id=5, attempt=6)
    assert argv == ["prog", "--out={job_id}.{attempt}", "-j", "5"]


@pytest.mark.parametrize("template", QUOTED_TEMPLATES)
def test_placeholders_inside_scripts_are_refused(template: str) -> None:
    with pytest.raises(TemplateError, match="DAWMS_INPUTS"):
        split_template(template)
    with pytest.raises(PayloadError, match="DAWMS_INPUTS"):
        build_command(template, inputs=["a.1"], outputs=["o.1"], job_id=1, attempt=1)


@pytest.mark.parametrize("template", QUOTED_TEMPLATES)
def test_the_task_validator_refuses_them_at_submit_time(template: str) -> None:
    spec = {"name": "inj", "transformation": template, "input_datasets": ["s:raw"],
            "output_dataset": "s:out.{task_id}"}
    with pytest.raises(TaskSpecError, match="transformation: .*DAWMS_INPUTS"):
        validate(spec)


@pytest.mark.parametrize("template", [
    "prog {inputs} {output}", "prog '{inputs}' \"{output}\"", "prog --out={output} {inputs}",
    "prog --job={job_id}.{attempt} -o out/{output}", "awk '{print $1}' {inputs}",
    "sh -c 'cat $DAWMS_INPUTS > \"$DAWMS_OUTPUT\"'",
    "sh -c 'for f; do cat \"$f\"; done > \"$0\"' {output} {inputs}",
])
def test_safe_templates_are_accepted(template: str) -> None:
    split_template(template)


def test_a_real_payload_gets_hostile_names_as_data(tmp_path: Path) -> None:
    """A real shell payload reading its arguments: prints the names, runs none of them."""
    argv = build_command("sh -c 'for f; do printf \"<%s>\\n\" \"$f\"; done' sh {inputs}",
                         inputs=HOSTILE, outputs=[], job_id=1, attempt=1)
    result = run_payload(argv, tmp_path)
    assert result.exit_code == 0
    printed = (tmp_path / STDOUT_NAME).read_text()
    assert printed == "".join(f"<{name}>\n" for name in HOSTILE)
    _no_pwned(tmp_path)


def test_the_command_runs_without_a_shell(tmp_path: Path) -> None:
    argv = build_command(f"{sys.executable} -c 'import sys; print(sys.argv[1:])' {{inputs}}",
                         inputs=["$(touch PWNED6)", "a;b"], outputs=[], job_id=1, attempt=1)
    assert run_payload(argv, tmp_path).exit_code == 0
    assert (tmp_path / STDOUT_NAME).read_text() == "['$(touch PWNED6)', 'a;b']\n"
    _no_pwned(tmp_path)


# --- a real pilot process --------------------------------------------------------------------

Spec = dict[str, Any]


@pytest.mark.parametrize("bad", ["a;touch PWNED1;", "$(touch PWNED2)", "`touch PWNED3`",
                                 "{output}", "x y"])
def test_the_pilot_refuses_a_spec_with_hostile_names_and_runs_nothing(
        stub_server: StubServer, job_spec: Callable[..., Spec], tmp_path: Path,
        bad: str) -> None:
    spec = job_spec("sh -c 'cat \"$@\" > \"$DAWMS_OUTPUT\"' sh {inputs}",
                    input_names=("raw.A._000001", bad))
    stub_server.jobs.append(spec)
    work = tmp_path / "work"
    run_pilot(stub_server, work)
    final = final_report(stub_server)
    assert final["state"] == "failed" and final["error_category"] == "pilot"
    assert "may contain only letters, digits" in final["error_diag"]
    jobdir = work / f"{spec['job_id']}.1"
    assert not (jobdir / STDOUT_NAME).exists(), "the payload was started"
    assert not (tmp_path / "dest" / spec["outputs"][0]["lfn"]).exists()
    _no_pwned(tmp_path)


def test_the_pilot_refuses_a_quoted_template_and_runs_nothing(
        stub_server: StubServer, job_spec: Callable[..., Spec], tmp_path: Path) -> None:
    spec = job_spec("sh -c 'cat {inputs} > {output}; touch PWNED7'")
    stub_server.jobs.append(spec)
    run_pilot(stub_server, tmp_path / "work")
    final = final_report(stub_server)
    assert final["state"] == "failed" and final["error_category"] == "payload"
    assert "looks like a shell or script string" in final["error_diag"] \
        or "must be a whole argument" in final["error_diag"]
    assert not (tmp_path / "work" / f"{spec['job_id']}.1" / STDOUT_NAME).exists()
    _no_pwned(tmp_path)


def test_a_script_reads_its_files_from_the_environment(
        stub_server: StubServer, job_spec: Callable[..., Spec], tmp_path: Path) -> None:
    """The documented way to use a shell: names through DAWMS_INPUTS / DAWMS_OUTPUT."""
    spec = job_spec("sh -c 'cat $DAWMS_INPUTS > \"$DAWMS_OUTPUT\"'")
    stub_server.jobs.append(spec)
    run_pilot(stub_server, tmp_path / "work")
    final = final_report(stub_server)
    assert final["state"] == "finished", final
    expected = b"".join(Path(i["urls"][0].removeprefix("file://")).read_bytes()
                        for i in spec["inputs"])
    assert (tmp_path / "dest" / spec["outputs"][0]["lfn"]).read_bytes() == expected
