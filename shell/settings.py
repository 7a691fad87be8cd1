"""Settings of the user's shell, from ``DAWMS_*`` environment variables, validated once."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    home: Path
    db_url: str
    server: str
    ddm: str

    @classmethod
    def from_env(cls) -> Settings:
        home = Path(os.environ.get("DAWMS_HOME", Path.home() / ".dawms"))
        server = os.environ.get("DAWMS_SERVER", "http://127.0.0.1:8080").rstrip("/")
        if not server.startswith(("http://", "https://")):
            raise ValueError(f"DAWMS_SERVER={server!r} must be an http(s) URL")
        return cls(home=home,
                   db_url=os.environ.get("DAWMS_DB_URL") or f"sqlite:///{home / 'dawms.db'}",
                   server=server, ddm=os.environ.get("DAWMS_DDM", "local"))
