"""Nothing outside the DDM bridge knows which DDM it talks to.

The CLI, the demo, the scheduler and the server reach the DDM only through
``ddm_bridge.get_ddm(settings.ddm)`` and the interface: no import of the local
backend, no URL built without ``pfn()``, no test of a backend's name. The
source is read as syntax trees, so a comment or docstring naming them is fine.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from sqlalchemy import func, select

from dawms.catalog.db import Database
from dawms.catalog.models import Dataset, File
from dawms.cli import main

pytestmark = pytest.mark.ddm
ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("catalog", "carousel", "ddm_bridge", "pilot", "scheduler", "server", "shell",
            "storage", "wire")


def _violations(path: Path, rel: str) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    bridge, local = rel.startswith("ddm_bridge/"), rel.startswith("ddm_bridge/local/")
    found = []
    for node in ast.walk(tree):
        where = f"{rel}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.ImportFrom) and node.module:
            names = {a.name for a in node.names}
            if "ddm_bridge.local" in node.module and not local and \
                    rel != "ddm_bridge/__init__.py":  # the registry of built-in backends
                found.append(f"{where}: imports {node.module}")
            if node.module.endswith("storage.paths") and "lfn2pfn" in names and not bridge:
                found.append(f"{where}: builds URLs with lfn2pfn, not ddm.pfn()")
            if node.module.endswith("ddm_bridge") and "local" in names and not local:
                found.append(f"{where}: imports ddm_bridge.local")
        elif isinstance(node, ast.Import):
            for a in node.names:
                if "ddm_bridge.local" in a.name and not local:
                    found.append(f"{where}: imports {a.name}")
        elif isinstance(node, ast.Compare) and not local:
            sides = [node.left, *node.comparators]
            named = any(isinstance(x, ast.Attribute) and x.attr in ("name", "ddm")
                        for x in sides)
            if named and any(isinstance(x, ast.Constant) and x.value == "local"
                             for x in sides):
                found.append(f"{where}: tests a backend by name")
    return found


def test_no_code_outside_the_bridge_knows_the_local_ddm() -> None:
    files = [p for pkg in PACKAGES if (ROOT / pkg).is_dir()
             for p in sorted((ROOT / pkg).rglob("*.py"))]
    assert len(files) > 50  # the scan really reads the packages
    found = [v for p in files for v in _violations(p, p.relative_to(ROOT).as_posix())]
    assert found == []


@pytest.mark.parametrize("source, why", [
    ("from dawms.ddm_bridge.local import LocalDDM\n", "imports dawms.ddm_bridge.local"),
    ("from dawms.storage.paths import lfn2pfn\n", "lfn2pfn"),
    ("from dawms.ddm_bridge import local\n", "imports ddm_bridge.local"),
    ("import dawms.ddm_bridge.local.transfer\n", "imports dawms.ddm_bridge.local"),
    ("def f(ddm):\n    return ddm.name == 'local'\n", "tests a backend by name"),
    ("def f(req):\n    return 'local' != req.ddm\n", "tests a backend by name"),
])
def test_the_scan_catches_each_way_of_knowing(tmp_path: Path, source: str, why: str) -> None:
    path = tmp_path / "bad.py"
    path.write_text(source)
    (found,) = _violations(path, "scheduler/bad.py")
    assert why in found
    assert _violations(path, "ddm_bridge/local/bad.py") == []  # the backend itself may


def test_data_upload_uses_the_configured_backend(db: Database, sites: list[str],
                                                 tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "f.1"
    data.write_bytes(b"x" * 10)
    monkeypatch.setenv("DAWMS_DB_URL", db.url)
    monkeypatch.setenv("DAWMS_DDM", "nosuchddm")
    assert main(["data", "upload", "up:ds", str(data), "--endpoint", "SITE_A_DISK"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "unknown DDM backend 'nosuchddm'" in err and err.count("\n") == 1
    with db.session() as s:
        assert [s.scalar(select(func.count()).select_from(t)) for t in (Dataset, File)] \
            == [0, 0]
    monkeypatch.setenv("DAWMS_DDM", "local")
    assert main(["data", "upload", "up:ds", str(data), "--endpoint", "SITE_A_DISK"]) == 0
    assert capsys.readouterr().out == "1 files in up:ds at SITE_A_DISK\n"
