"""The name grammar (catalog/names.py) and path confinement (storage/paths.py), as tables."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dawms.catalog.names import (
    MAX_NAME,
    MAX_SCOPE,
    InvalidName,
    check_name,
    check_scope,
    split_did,
)
from dawms.storage.paths import PathEscape, confine_path, confine_url, lfn2pfn, within_url

pytestmark = pytest.mark.security

GOOD_NAMES = ["ab", "raw.A._000001", "reco.3._000004.1.log.tgz", "a-b_c.d", "A" * MAX_NAME,
              "0x", "data18_13TeV.00348885.physics_Main.deriv.DAOD_PHYS.r13286_p4910"]
BAD_NAMES = ["", "a", "..", ".", "../x", "x/..", "a/b", "/abs", "a\\b", "a..b", ".hidden",
             "-rf", "_x", "a b", "a;b", "$(id)", "`id`", "{output}", "a:b", "é1", "a\0b",
             "a\nb", "A" * (MAX_NAME + 1)]


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_good_names(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_names(name: str) -> None:
    with pytest.raises(InvalidName):
        check_name(name)


def test_scopes_are_bounded_and_follow_the_same_characters() -> None:
    assert check_scope("s") == "s" and check_scope("s" * MAX_SCOPE)
    for bad in ("", "s" * (MAX_SCOPE + 1), "..", "a/b", ".s", "a b"):
        with pytest.raises(InvalidName):
            check_scope(bad)


@pytest.mark.parametrize("did", ["noscope", ":name", "scope:", "a:b:c", "../x:y", "x:../y",
                                 "x:/y", "/x:y", "x:y/z"])
def test_split_did_refuses(did: str) -> None:
    with pytest.raises(InvalidName):
        split_did(did)


def test_the_grammar_is_standard_library_only() -> None:
    """The pilot imports it: it must pull in nothing but the standard library."""
    out = subprocess.run([sys.executable, "-c", "import sys, dawms.catalog.names; "
                          "print(sorted(m for m in sys.modules if m.startswith('dawms.')))"],
                         capture_output=True, text=True, check=True, cwd="/").stdout
    assert out.strip() == "['dawms.catalog', 'dawms.catalog.names']"


PREFIX = "file:///data/site/disk"


@pytest.mark.parametrize("url, inside", [
    (f"{PREFIX}/s/ab/cd/f.1", True),
    (f"{PREFIX}/s/../../../etc/passwd", False),
    (f"{PREFIX}/s/%2e%2e/%2e%2e/%2E%2E/etc/passwd", False),
    (f"{PREFIX}/s/%2f..%2f..%2f..%2fetc", False),
    ("file:///data/site/diskother/f", False),
    (PREFIX, False), (PREFIX + "/", False), (PREFIX + "/.", False),
    (f"{PREFIX}/s/f?x=1", False), (f"{PREFIX}/s/f#frag", False),
    (f"{PREFIX}/s/a\\..\\..\\b", False),
    ("file://otherhost/data/site/disk/f", False),
    ("root://eos//data/site/disk/f", False),
    ("/data/site/disk/f", False),
])
def test_confine_url_for_files(url: str, inside: bool) -> None:
    assert within_url(PREFIX, url) is inside


@pytest.mark.parametrize("url, inside", [
    ("root://eos.x:1094//eos/atlas/s/f", True),
    ("root://eos.x:1094//eos/atlas/../cms/f", False),
    ("root://eos.x:1095//eos/atlas/s/f", False),
    ("root://other:1094//eos/atlas/s/f", False),
    ("davs://eos.x:1094//eos/atlas/s/f", False),
])
def test_confine_url_for_other_schemes(url: str, inside: bool) -> None:
    assert within_url("root://eos.x:1094//eos/atlas", url) is inside
    assert within_url("s3://bucket/prefix", "s3://bucket/prefix/a/b")
    assert not within_url("s3://bucket/prefix", "s3://bucket/prefix/../other/b")
    assert not within_url("s3://bucket/prefix", "s3://other/prefix/a")


def test_lfn2pfn_refuses_what_would_leave_the_prefix() -> None:
    assert lfn2pfn(PREFIX, "s", "f.1").startswith(PREFIX + "/s/")
    for scope, name in (("s", "../../x"), ("..", "f"), ("s", "/abs"), ("s", "a/b"),
                        ("s", "-rf"), ("s", "%2e%2e"), ("s", "."), ("", "f")):
        with pytest.raises(PathEscape):
            lfn2pfn(PREFIX, scope, name)
    with pytest.raises(PathEscape):
        confine_url(PREFIX, PREFIX + "/../x")


def test_confine_path_resolves_links(tmp_path: Path) -> None:
    root = tmp_path / "work"
    root.mkdir()
    (root / "f").write_text("x")
    assert confine_path(root, "f") == (root / "f").resolve()
    assert confine_path(root, root / "new") == (root / "new").resolve()  # need not exist
    os.symlink(tmp_path, root / "up")
    os.symlink("/etc/passwd", root / "pw")
    for bad in ("../x", "/etc/passwd", "up/x", "pw", root, "."):
        with pytest.raises(PathEscape) as err:
            confine_path(root, bad)
        assert str(err.value).endswith(f"is not inside {str(root)!r}")  # no facts about it
