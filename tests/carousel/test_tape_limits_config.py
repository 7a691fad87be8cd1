"""Tape limits in the sites file: synced onto the endpoint, validated, PanDA's defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select
from tape_helpers import tape_site_config

from dawms.carousel.config import CarouselConfig, TapeLimits
from dawms.catalog.db import Database
from dawms.catalog.models import StorageEndpoint
from dawms.catalog.site_config import ConfigError, sync, validate

pytestmark = pytest.mark.carousel


def test_limits_are_synced_and_default_to_pandas(db: Database, tmp_path: Path) -> None:
    cfg = tape_site_config(tmp_path, staging_max_files=300, staging_max_bytes=10**15,
                           staging_max_percent=40)
    with db.session() as s:
        changes = sync(s, validate(cfg), actor="t", source="t")
        tape = s.scalar(select(StorageEndpoint).where(StorageEndpoint.name == "T1_TAPE"))
        assert TapeLimits.of(tape) == TapeLimits(300, 10**15, 40)
        assert (TapeLimits.of(tape).staging_files, TapeLimits.of(tape).staging_bytes) == \
            (120, 4e14)
        assert any(c.name == "T1_TAPE" and c.op == "add" for c in changes)
    del cfg["endpoint"][-1]["staging_max_percent"]
    with db.session() as s:
        changes = sync(s, validate(cfg), actor="t", source="t")
        assert [str(c) for c in changes] == ["~ endpoint T1_TAPE (staging_max_percent: 40 -> "
                                             "None)"]
        tape = s.scalar(select(StorageEndpoint).where(StorageEndpoint.name == "T1_TAPE"))
        assert TapeLimits.of(tape).max_percent == 50
    assert TapeLimits().max_files == 10000 and TapeLimits().staging_files == 5000


@pytest.mark.parametrize("change,message", [
    ({"staging_max_percent": 101}, "staging_max_percent must be at most 100"),
    ({"staging_max_percent": 0}, "staging_max_percent must be positive"),
    ({"staging_max_files": 2**31}, "staging_max_files must be at most"),
    ({"staging_max_bytes": "lots"}, "staging_max_bytes must be int"),
    ({"staging_buffer": "SITE_A_PROD"}, "must be a disk endpoint"),
    ({"staging_buffer": "T1_TAPE"}, "must be a disk endpoint"),
])
def test_bad_limits_are_refused(tmp_path: Path, change: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate(tape_site_config(tmp_path, **change))


def test_limits_on_a_disk_endpoint_are_refused(tmp_path: Path) -> None:
    cfg = tape_site_config(tmp_path)
    cfg["endpoint"][0]["staging_max_files"] = 5
    with pytest.raises(ConfigError, match="apply to tape endpoints only"):
        validate(cfg)


def test_carousel_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DAWMS_CAROUSEL_SHARES", "reprocessing=0.6,mc=0.4")
    monkeypatch.setenv("DAWMS_CAROUSEL_MAX_ATTEMPTS", "5")
    cfg = CarouselConfig.from_env()
    assert cfg.share_targets == {"reprocessing": 0.6, "mc": 0.4} and cfg.max_attempts == 5
    assert cfg.target("other") == cfg.default_target
    monkeypatch.setenv("DAWMS_CAROUSEL_BACKOFF_S", "-3")
    with pytest.raises(ValueError, match="backoff_s must be positive"):
        CarouselConfig.from_env()
    monkeypatch.setenv("DAWMS_CAROUSEL_BACKOFF_S", "soon")
    with pytest.raises(ValueError, match="DAWMS_CAROUSEL_BACKOFF_S"):
        CarouselConfig.from_env()
