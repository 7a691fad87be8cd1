"""How dawms reaches a Rucio: validated once, from ``DAWMS_RUCIO_*`` or Rucio's own rucio.cfg.

Anything left unset here falls back to Rucio's client configuration
(``RUCIO_CONFIG`` / ``/opt/rucio/etc/rucio.cfg``, section ``[client]``), so a site
that already has a working ``rucio`` CLI needs no new settings; token (OIDC)
and X.509 set-ups are configured there the way Rucio documents them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class RucioSettings(BaseSettings):
    """The Rucio backend's knobs; ``DAWMS_RUCIO_<FIELD>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="DAWMS_RUCIO_", extra="ignore")

    host: str | None = Field(None, description="Rucio server URL (rucio.cfg rucio_host)")
    auth_host: str | None = Field(None, description="auth server URL (default: host)")
    account: str | None = None
    auth_type: Literal["userpass", "oidc", "x509", "x509_proxy", "gss", "ssh", "saml"] | None \
        = None
    username: str | None = None
    password: str | None = None
    vo: str | None = None
    request_timeout_s: float = Field(30.0, gt=0)

    # replication (PanDA's dispatch blocks)
    dispatch_scope: str | None = Field(None, description="scope of _dis datasets "
                                       "(default: the scope of the files)")
    rule_lifetime_s: int = Field(7 * 86400, gt=0)  # PanDA: 7 days
    notify: Literal["Y", "N", "C", "P"] = "C"  # close: DATASETLOCK_OK once complete
    max_tries: int = Field(3, ge=1, description="STUCK checks / failed transfers before a "
                           "request fails")

    # the rule poller (the safety net); 0 switches it off
    poll_interval_s: float = Field(30.0, ge=0)
    poll_batch: int = Field(500, ge=1, le=10000)

    # the catalog as a cache of Rucio
    cache_ttl_s: float = Field(300.0, ge=0)
    verify_outputs: bool = True  # check an output's size on storage before registering it

    # backing off while Rucio is unreachable
    backoff_initial_s: float = Field(1.0, gt=0)
    backoff_max_s: float = Field(300.0, gt=0)

    # STOMP consumer of hermes' messages: "host:port[,host:port]"; empty = off
    stomp_brokers: str = ""
    stomp_username: str = "guest"
    stomp_password: str = "guest"
    stomp_vhost: str = "/"
    stomp_destination: str = "/topic/rucio.events"
    stomp_subscription: str = Field("dawms", max_length=64,
                                    description="durable subscription name")

    def client_kwargs(self) -> dict[str, object]:
        """Keyword arguments for ``rucio.client.Client``: only what is set here."""
        kw: dict[str, object] = {"timeout": self.request_timeout_s}
        if self.host:
            kw["rucio_host"] = self.host
            kw["auth_host"] = self.auth_host or self.host
        elif self.auth_host:
            kw["auth_host"] = self.auth_host
        for key in ("account", "auth_type", "vo"):
            if getattr(self, key):
                kw[key] = getattr(self, key)
        if self.username or self.password:
            kw["creds"] = {"username": self.username or "", "password": self.password or ""}
        return kw

    def brokers(self) -> list[tuple[str, int]]:
        out = []
        for item in filter(None, (p.strip() for p in self.stomp_brokers.split(","))):
            host, sep, port = item.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"DAWMS_RUCIO_STOMP_BROKERS: {item!r} is not host:port")
            out.append((host, int(port)))
        return out
