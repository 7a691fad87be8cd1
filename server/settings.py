"""The server's settings, from ``DAWMS_*`` environment variables, validated at start.

Auth is on by default. ``DAWMS_AUTH=off`` is for development on a loopback bind
only (``dawms server`` refuses any other bind with it). Body limits: the default
for every route, a larger one for bulk pilot reports and one sized for a DDM bulk
of 1,000 messages. OIDC issuers and the DDM's HTTP Basic users are JSON, e.g.::

    DAWMS_OIDC_ISSUERS='[{"issuer": "https://iam.example.org/", "jwks_url":
        "https://iam.example.org/jwk", "audience": "dawms", "role_claim": "groups",
        "roles": {"/atlas/production": "production", "/atlas": "analyst"}}]'
    DAWMS_DDM_BASIC_USERS='{"hermes": "scrypt$16384$8$1$<salt>$<hash>"}'

(``dawms token hash-secret`` prints such a hash; the secret itself is never stored.)
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ROLE_NAMES = ("admin", "production", "analyst", "reader", "pilot", "factory", "ddm")
MB = 1024 * 1024


class OIDCIssuer(BaseModel):
    """An external token issuer (IAM, CILogon, Keycloak...) whose tokens we accept."""

    issuer: str = Field(max_length=512, description="the tokens' `iss`, exactly")
    jwks_url: str = Field(max_length=1024, pattern=r"^https?://")
    audience: str = Field(max_length=255)
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256"], max_length=8)
    subject_claim: str = Field("sub", max_length=64)
    role_claim: str = Field("groups", max_length=64,
                            description="a claim holding a string or a list of strings")
    roles: dict[str, Literal[ROLE_NAMES]] = Field(  # type: ignore[valid-type]
        description="claim value -> role; the first entry (in order) that matches wins")
    queues_claim: str | None = Field(None, max_length=64,
                                     description="for pilot/factory tokens: the queues")
    jwks_cache_s: float = Field(300, ge=0, description="how long the JWKS is cached")
    jwks_refresh_cooldown_s: float = Field(
        30, ge=0, description="an unknown kid refetches the JWKS at most this often")


class ServerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DAWMS_", extra="ignore")

    auth: Literal["on", "off"] = "on"
    token_issuer: str = Field("dawms", max_length=255)
    token_audience: str = Field("dawms", max_length=255)
    max_body_bytes: int = Field(1 * MB, ge=1024)
    max_bulk_body_bytes: int = Field(16 * MB, ge=1024)
    max_ddm_body_bytes: int = Field(8 * MB, ge=1024)
    pilot_token_max_s: int = Field(2 * 86400, ge=60,
                                   description="longest life of a factory-made pilot token")
    key_cache_s: float = Field(10.0, ge=0, description="how long verifying keys are cached")
    ready_slack_s: float = Field(60.0, ge=0, description="/readyz: a daemon is late once its "
                                 "last success is older than 3 intervals plus this")
    token_cache_s: float = Field(
        5.0, ge=0, le=300, description="pilot endpoints: how long a verified token is taken "
                                       "without checking it again (a revocation of a pilot "
                                       "token takes effect within this); 0: never cached")
    oidc_issuers: list[OIDCIssuer] = Field(default_factory=list, max_length=16)
    ddm_basic_users: dict[str, str] = Field(default_factory=dict)

    @field_validator("auth", mode="before")
    @classmethod
    def _onoff(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip().lower()
            return {"1": "on", "true": "on", "yes": "on", "0": "off", "false": "off",
                    "no": "off"}.get(value, value)
        return value
