"""Settings of the user's shell, validated once: flags, then ``DAWMS_*`` environment
variables, then the client config file, then defaults.

The config file is ``$DAWMS_CONFIG``, else ``config.toml`` in ``$XDG_CONFIG_HOME/dawms``
(``~/.config/dawms`` if that is not set). It may hold ``server``, ``token``, ``db_url``,
``home`` and ``ddm``; ``dawms config set`` writes it with mode 0600 since it holds a
token, and reading one that others may read warns. Any other key, a value of the
wrong type or a file that does not parse is an error naming the file and the key.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

DEFAULT_SERVER = "http://127.0.0.1:8080"
KEYS = ("server", "token", "db_url", "home", "ddm")
MAX_CONFIG_BYTES = 64 * 1024


def config_path() -> Path:
    """Where the client config file is (it need not exist)."""
    if os.environ.get("DAWMS_CONFIG"):
        return Path(os.environ["DAWMS_CONFIG"]).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base).expanduser() / "dawms" / "config.toml"


def check_server(url: str) -> str:
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")) or len(url) > 2048 or any(
            c.isspace() for c in url):
        raise ValueError(f"server {url[:200]!r} must be an http(s) URL, e.g. {DEFAULT_SERVER}")
    return url


def check_token(token: str) -> str:
    token = token.strip()
    if any(c.isspace() for c in token) or len(token) > 16384:
        raise ValueError("token must be one word (a JWT from `dawms token issue`)")
    return token


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DAWMS_", env_ignore_empty=True,
                                      extra="forbid", frozen=True)

    home: Path = Path.home() / ".dawms"
    db_url: str = ""
    server: str = DEFAULT_SERVER
    token: str | None = None
    ddm: str = "local"

    @field_validator("server")
    @classmethod
    def _server(cls, v: str) -> str:
        return check_server(v)

    @field_validator("token")
    @classmethod
    def _token(cls, v: str | None) -> str | None:
        return check_token(v) or None if v is not None else None

    def model_post_init(self, _context: Any) -> None:
        if not self.db_url:
            object.__setattr__(self, "db_url", f"sqlite:///{self.home / 'dawms.db'}")

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings],
                                   init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings,
                TomlConfigSettingsSource(settings_cls, toml_file=config_path()))

    @classmethod
    def from_env(cls, **overrides: Any) -> Settings:
        """The settings (``overrides`` are the flags); ``ValueError`` saying what to fix."""
        path = config_path()
        check_file(path)
        try:
            return cls(**{k: v for k, v in overrides.items() if v is not None})
        except ValidationError as exc:
            problems = []
            for e in exc.errors():
                key = ".".join(str(p) for p in e["loc"])
                msg = ("not a setting (known: " + ", ".join(KEYS) + ")"
                       if e["type"] == "extra_forbidden" else e["msg"])
                problems.append(f"{key}: {msg}")
            raise ValueError(f"settings (flags, DAWMS_* variables, {path}): "
                             + "; ".join(problems)) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"cannot read {path}: {exc}") from None
        except ValueError as exc:  # the TOML itself does not parse
            raise ValueError(f"{path} is not valid TOML: {exc}") from None


def check_file(path: Path, *, warn: bool = True) -> None:
    """A config file too big to be one, or not a file, is refused; one others may read
    while it holds a token draws a warning (like ssh's)."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise ValueError(f"{path} is not a regular file")
    if info.st_size > MAX_CONFIG_BYTES:
        raise ValueError(f"{path} is {info.st_size} bytes; a config file is at most "
                         f"{MAX_CONFIG_BYTES}")
    if warn and info.st_mode & 0o077:
        try:
            has_token = "token" in path.read_text()
        except (OSError, UnicodeDecodeError):
            has_token = False
        if has_token:
            print(f"warning: {path} holds a token and others may read it "
                  f"(mode {stat.S_IMODE(info.st_mode):o}); run chmod 600 {path}",
                  file=sys.stderr)
