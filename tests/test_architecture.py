"""Rules the build checks (``make lint`` runs this file after ruff and lint-imports).

- The import contracts of pyproject.toml (``[tool.importlinter]``) hold over the
  installed package, and a deliberately added import against each of them makes
  ``lint-imports`` fail (a copy of the installed tree with probe modules).
- ``catalog/states.py`` and ``wire/`` import only the standard library (and wire
  only ``dawms.catalog.states`` of ours): the pilot installs without server deps.
- Only ``catalog/transition.py`` writes a ``state`` column; a row inserted with its
  first state is logged with ``record_created`` in the same function; replicas
  get history rows like every other entity.
- Every pytest marker is registered and ``--strict-markers`` is on.
- Docstrings, comments and the README point only at files that exist. The rule:
  a path with a slash (``catalog/states.py``) is relative to the repository
  root; a bare module name (``states.py``) must name a file of the repository;
  ``DESIGN.md`` and ``notes/<name>.md`` (also written ``../shared/notes/<name>.md``)
  are the team's shared documents, in the ``shared/`` folder beside the
  repository, checked there when that folder is present.
"""

from __future__ import annotations

import ast
import io
import os
import re
import shutil
import subprocess
import sys
import tokenize
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

import dawms
from dawms.catalog.db import Database
from dawms.catalog.models import File, Replica, StateHistory, StorageEndpoint
from dawms.catalog.states import ReplicaState
from dawms.ddm_bridge.abc import FileInfo
from dawms.ddm_bridge.local import LocalDDM
from dawms.storage.checksum import bytes_adler32

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
# the folders that install as dawms.* (pyproject package-dir), i.e. our code
PACKAGE_DIRS = sorted({Path(d).parts[0] for d in
                       PYPROJECT["tool"]["setuptools"]["package-dir"].values()})
SKIP_DIRS = {".venv", "build", ".services", ".git", "__pycache__", ".ruff_cache",
             "dawms.egg-info"}


def our_files(*dirs: str, suffix: str = ".py") -> Iterator[Path]:
    for d in dirs:
        for p in sorted((ROOT / d).rglob(f"*{suffix}")):
            if not SKIP_DIRS & set(p.relative_to(ROOT).parts):
                yield p


# ----------------------------------------------------------------- import contracts
def _lint_imports(cwd: Path, pythonpath: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ}
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run([str(LINT_IMPORTS), "--config", str(ROOT / "pyproject.toml"),
                           "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


CONTRACTS = PYPROJECT["tool"]["importlinter"]["contracts"]


def test_the_import_contracts_hold_over_the_installed_package(tmp_path: Path) -> None:
    assert Path(dawms.__file__).resolve().parent != ROOT / "dawms"
    run = _lint_imports(tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"Contracts: {len(CONTRACTS)} kept, 0 broken." in run.stdout


def _probes() -> dict[str, list[tuple[str, str]]]:
    """For each contract, modules (path in the package, imported name) that break it."""
    probes: dict[str, list[tuple[str, str]]] = {}
    for i, c in enumerate(CONTRACTS):
        if c["type"] == "layers":
            low, high = c["layers"][-1], c["layers"][0]
            probes[c["name"]] = [(f"{low}.probe_layers_{i}", high)]
        else:
            src = c["source_modules"][0]
            probes[c["name"]] = [(f"{src}.probe_first_{i}", c["forbidden_modules"][0]),
                                 (f"{src}.probe_last_{i}", c["forbidden_modules"][-1])]
    # the pilot reaches catalog.states only through wire: a direct import is refused
    pilot = next(c["name"] for c in CONTRACTS if c.get("source_modules") == ["dawms.pilot"])
    probes[pilot].append(("dawms.pilot.probe_states", "dawms.catalog.states"))
    return probes


def test_a_forbidden_import_makes_lint_imports_fail(tmp_path: Path) -> None:
    """Each contract, given one import against it in a copy of the installed package."""
    installed = Path(dawms.__file__).resolve().parent
    shutil.copytree(Path(dawms.__file__).parent, tmp_path / "dawms", symlinks=False,
                    ignore=shutil.ignore_patterns("__pycache__"))
    assert installed.exists()
    probes = _probes()
    for module, target in (p for group in probes.values() for p in group):
        path = tmp_path.joinpath(*module.split(".")).with_suffix(".py")
        path.write_text(f'"""A probe against the arrows."""\nimport {target}  # noqa\n')
    run = _lint_imports(tmp_path, pythonpath=tmp_path)
    assert run.returncode != 0, run.stdout
    for name in probes:
        assert f"{name} BROKEN" in run.stdout, (name, run.stdout[-3000:])
    assert f"Contracts: 0 kept, {len(CONTRACTS)} broken." in run.stdout


STDLIB = set(sys.stdlib_module_names) | {"__future__"}


@pytest.mark.parametrize("path", ["catalog/states.py", *[
    p.relative_to(ROOT).as_posix() for p in our_files("wire")]])
def test_the_wire_and_the_state_tables_use_the_standard_library_only(path: str) -> None:
    tree = ast.parse((ROOT / path).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module or ""]
        else:
            continue
        for name in names:
            assert name.split(".")[0] in STDLIB or name == "dawms.catalog.states", \
                f"{path}:{node.lineno} imports {name}"
            if path == "catalog/states.py":
                assert name.split(".")[0] in STDLIB, f"{path} imports {name}"


# ----------------------------------------------------------------- one writer of state
STATEFUL = {"Job", "Task", "DataRequest", "Replica"}  # transition.MODELS
WRITER = "catalog/transition.py"
UPDATE_SQL = re.compile(r"\bUPDATE\s+\w+\s+SET\b[^;]*\bstate\s*=|\bINSERT\s+INTO\s+"
                        r"(job|task|data_request|replica)\b", re.IGNORECASE | re.DOTALL)


def _name(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return _name(node.value) if node.attr == "__table__" else node.attr
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Call):
        return _name(node.func)
    return ""


def _dicts_with_state(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Dict) and any(isinstance(k, ast.Constant) and k.value == "state"
                                               for k in n.keys)
               for n in ast.walk(node))


def state_writes(source: str, where: str) -> list[str]:
    """Every place in ``source`` that writes a state column or inserts a stateful row
    without ``record_created`` in the same function."""
    tree = ast.parse(source)
    found: list[str] = []
    for node in ast.walk(tree):
        line = f"{where}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            flat = [e for t in targets for e in (t.elts if isinstance(t, ast.Tuple) else [t])]
            if any(isinstance(t, ast.Attribute) and t.attr == "state" for t in flat):
                found.append(f"{line}: assigns .state")
        elif isinstance(node, ast.Call):
            fn = _name(node.func)
            if fn == "setattr" and len(node.args) > 1 and \
                    isinstance(node.args[1], ast.Constant) and node.args[1].value == "state":
                found.append(f"{line}: setattr(..., 'state', ...)")
            elif fn == "values" and (any(k.arg == "state" for k in node.keywords)
                                     or _dicts_with_state(node)):
                found.append(f"{line}: .values(state=...)")
            elif fn in ("execute", "bulk_update_mappings") and node.args and (
                    fn == "bulk_update_mappings" or _name(node.args[0]) == "update") and \
                    _dicts_with_state(node):
                found.append(f"{line}: bulk update of state")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and \
                UPDATE_SQL.search(node.value):
            found.append(f"{line}: SQL writing state")
    for fn in ast.walk(tree):
        if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        calls = [n for n in ast.walk(fn) if isinstance(n, ast.Call)]
        creates = [n for n in calls if (
            (_name(n.func) in STATEFUL and any(k.arg == "state" for k in n.keywords))
            or (_name(n.func) == "insert" and n.args and _name(n.args[0]) in STATEFUL))]
        if creates and not any(_name(n.func) == "record_created" for n in calls):
            found += [f"{where}:{n.lineno}: creates a row in a state without record_created"
                      for n in creates]
    return found


def test_only_the_transition_path_writes_a_state_column() -> None:
    """Over every module that installs as dawms.* (the pilot, wire and storage cannot
    reach the catalog's models at all: the import contracts say so)."""
    checked = 0
    problems = []
    for path in our_files(*PACKAGE_DIRS):
        rel = path.relative_to(ROOT).as_posix()
        if rel == WRITER:
            continue
        if rel.startswith(("pilot/",)):  # no database: "state" there is the pilot's own
            continue
        problems += state_writes(path.read_text(), rel)
        checked += 1
    assert checked > 40
    assert problems == []


@pytest.mark.parametrize("snippet", [
    "def f(job):\n    job.state = 'running'\n",
    "def f(job):\n    job.state, job.x = 'running', 1\n",
    "def f(job):\n    setattr(job, 'state', 'running')\n",
    "def f(s):\n    s.execute(update(Job).where(Job.id == 1).values(state='failed'))\n",
    "def f(s):\n    s.execute(update(Job).values({'state': 'failed'}))\n",
    "def f(s):\n    s.execute(update(Job).values(**{'state': 'failed'}))\n",
    "def f(s):\n    s.execute(update(Replica), [{'id': 1, 'state': 'bad'}])\n",
    "def f(s):\n    s.bulk_update_mappings(Job, [{'id': 1, 'state': 'bad'}])\n",
    "def f(s):\n    s.execute(text(\"UPDATE job SET state='sent' WHERE id=1\"))\n",
    "def f(s):\n    s.execute(text('INSERT INTO replica (state) VALUES (1)'))\n",
    "def f(s):\n    s.add(Replica(file_id=1, endpoint_id=2, state='available'))\n",
    "def f(s):\n    s.execute(insert(Replica), [{'file_id': 1, 'state': 'copying'}])\n",
    "def f(s):\n    s.execute(insert(Job.__table__), [{'task_id': 1}])\n",
])
def test_a_deliberate_state_write_is_found(snippet: str) -> None:
    assert state_writes(snippet, "probe.py"), snippet


@pytest.mark.parametrize("snippet", [
    "def f(s):\n    s.add(Replica(file_id=1, state='available'))\n"
    "    record_created(s, Entity.REPLICA, [(1, None)], 'available', actor='t')\n",
    "def f(hb):\n    return {'state': hb.state}\n",
    "def f(c):\n    return c.tasks(state='running')\n",
])
def test_what_is_not_a_state_write(snippet: str) -> None:
    assert state_writes(snippet, "probe.py") == []


def _replica_history(s, file_ids: list[int]) -> dict[int, list[tuple[str, str]]]:  # type: ignore[no-untyped-def]
    ids = dict(s.execute(select(Replica.id, Replica.file_id)
                         .where(Replica.file_id.in_(file_ids))).all())
    out: dict[int, list[tuple[str, str]]] = {f: [] for f in file_ids}
    for h in s.scalars(select(StateHistory).where(StateHistory.entity == "replica",
                                                  StateHistory.entity_id.in_(list(ids)))
                       .order_by(StateHistory.id)):
        out[ids[h.entity_id]].append((h.from_state, h.to_state))
    return out


def test_replicas_get_history_rows_when_they_are_born(
        db: Database, sites: list[str]) -> None:
    ddm = LocalDDM()
    with db.session() as s:
        a, b = (s.scalar(select(StorageEndpoint).where(StorageEndpoint.name == f"{n}_DISK"))
                for n in sites[:2])
        infos = [FileInfo(scope="t", name=f"f{i}", size=1, adler32=bytes_adler32(b"x"))
                 for i in range(3)]
        for info in infos:  # the outputs a pilot stored
            path = Path(ddm.pfn(a, info.scope, info.name).removeprefix("file://"))
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"x")
        files = ddm.register_outputs(s, "t:out", infos, a)
        ids = [f.id for f in files]
        assert _replica_history(s, ids) == {i: [("", ReplicaState.AVAILABLE)] for i in ids}
        ddm.request_replication(s, list(s.scalars(select(File).where(File.id.in_(ids)))), b,
                                name="t_dis1")
    with db.session() as s:
        history = _replica_history(s, ids)
        assert history == {i: [("", "available"), ("", "copying")] for i in ids}
        actors = set(s.scalars(select(StateHistory.actor).where(
            StateHistory.entity == "replica")))
        assert actors == {"ddm:local"}


# ----------------------------------------------------------------- markers
def test_markers_are_registered_and_strict() -> None:
    options = PYPROJECT["tool"]["pytest"]["ini_options"]
    assert "--strict-markers" in options["addopts"].split()
    registered = {m.split(":")[0].strip() for m in options["markers"]}
    used = set()
    for path in our_files("tests"):
        used |= set(re.findall(r"pytest\.mark\.(\w+)", path.read_text()))
    builtin = {"parametrize", "skip", "skipif", "xfail", "usefixtures", "filterwarnings",
               "timeout"}
    assert used - builtin <= registered


# ----------------------------------------------------------------- references
REF_PATH = re.compile(
    r"(?<![\w./:-])((?:\.\./shared/)?(?:[A-Za-z_][\w.-]*/)+[\w.-]*\w"
    r"\.(?:py|md|toml|sh|mako|json|ya?ml|cfg|txt|ini))(?![\w/])")
REF_BARE = re.compile(r"(?<![\w./:-])([A-Za-z_]\w*\.py)(?![\w/])")
SHARED_DOCS = re.compile(r"(?:\.\./shared/)?(notes/[\w.-]+\.md)|(DESIGN\.md)")
EXAMPLES = {"reco.py", "x.py"}  # payload names in example command lines


def _shared_dir() -> Path | None:
    for folder in [ROOT, *ROOT.parents]:
        if (folder / "shared" / "notes").is_dir():
            return folder / "shared"
    return None


def _doc_texts(path: Path) -> Iterator[tuple[int, str]]:
    source = path.read_text()
    if path.suffix != ".py":
        yield 1, source
        return
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            doc = ast.get_docstring(node, clean=False)
            if doc:
                yield getattr(node, "lineno", 1), doc
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            yield tok.start[0], tok.string


def dangling_references(root: Path, shared: Path | None) -> list[str]:
    names = {p.name for p in root.rglob("*") if not SKIP_DIRS & set(p.relative_to(root).parts)}
    files = [p for p in root.rglob("*.py") if not SKIP_DIRS & set(p.relative_to(root).parts)]
    bad = []
    for path in [*files, root / "README.md"]:
        rel = path.relative_to(root).as_posix()
        for line, text in _doc_texts(path):
            for doc in SHARED_DOCS.finditer(text):
                name = doc.group(1) or doc.group(2)
                if shared is not None and not (shared / name).is_file():
                    bad.append(f"{rel}:{line}: {name} is not in {shared}")
            for m in REF_PATH.finditer(text):
                ref = m.group(1)
                if SHARED_DOCS.fullmatch(ref):
                    continue
                if not (root / ref).exists():
                    bad.append(f"{rel}:{line}: {ref} does not exist")
            for m in REF_BARE.finditer(text):
                if m.group(1) not in names and m.group(1) not in EXAMPLES:
                    bad.append(f"{rel}:{line}: no file named {m.group(1)}")
    return bad


def test_docstrings_and_comments_point_at_files_that_exist() -> None:
    assert dangling_references(ROOT, _shared_dir()) == []


def test_a_dangling_reference_is_found(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "README.md").write_text("See pkg/mod.py and notes/style.md.\n")
    (tmp_path / "pkg" / "mod.py").write_text(
        '"""Uses pkg/gone.py, see notes/nope.md and DESIGN.md."""\n'
        "# the old wire.py is gone; ../shared/notes/style.md stays\nX = 'other/path.py'\n")
    shared = tmp_path / "shared"
    (shared / "notes").mkdir(parents=True)
    (shared / "notes" / "style.md").write_text("")
    found = dangling_references(tmp_path, shared)
    assert sorted(f.split(": ", 1)[1] for f in found) == [
        "DESIGN.md is not in " + str(shared), "no file named wire.py",
        "notes/nope.md is not in " + str(shared), "pkg/gone.py does not exist"]
