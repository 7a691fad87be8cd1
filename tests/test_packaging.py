"""Packaging: the pilot installs light, and the wheel carries everything the server needs."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_pilot_extra_installs_without_server_dependencies(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", f"{ROOT}[pilot]"], check=True,
                   capture_output=True)
    probe = subprocess.run([str(py), "-c", (
        "import importlib.util as u, dawms.pilot.main, dawms.storage.movers.file\n"
        "print([m for m in ('sqlalchemy', 'fastapi', 'apscheduler', 'alembic') "
        "if u.find_spec(m)])")], check=True, capture_output=True, text=True)
    assert probe.stdout.strip() == "[]"
    help_text = subprocess.run([str(venv / "bin" / "dawms-pilot"), "--help"], check=True,
                               capture_output=True, text=True).stdout
    assert "--server" in help_text and "--queue" in help_text


def test_wheel_carries_every_package_and_the_migrations(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w",
                    str(tmp_path), str(ROOT)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("dawms-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    # every package folder in the checkout is shipped (a new one not in package-dir fails)
    folders = {p.parent.relative_to(ROOT).as_posix() for p in ROOT.glob("*/**/__init__.py")
               if p.parts[len(ROOT.parts)] not in ("tests", "bench", "build", ".venv",
                                                       ".services")}
    assert {"storage", "storage/movers", "ddm_bridge/local", "pilot/factory"} <= folders
    for pkg in folders - {"shell"}:  # shell/ is the dawms package itself
        assert f"dawms/{pkg.removeprefix('shell/')}/__init__.py" in names, pkg
    versions = sorted(p.name for p in (ROOT / "catalog/migrations/versions").glob("0*.py"))
    for v in versions:
        assert f"dawms/catalog/migrations/versions/{v}" in names
    assert "dawms/catalog/migrations/env.py" in names
    assert "dawms/catalog/migrations/script.py.mako" in names
    # nothing with a generic top-level name lands in site-packages
    assert {n.split("/")[0] for n in names if not n.startswith("dawms-")} == {"dawms"}
