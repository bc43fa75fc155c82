"""Settings from ``CALSYNC_*`` environment variables and an optional ``.env`` file."""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from sync.errors import ConfigError


class Settings(BaseSettings):
    """The contract's configuration (see ``shared/DESIGN.md``) plus operational knobs."""

    model_config = SettingsConfigDict(env_prefix="CALSYNC_", env_file=".env", extra="ignore")

    database_url: str = "sqlite:///calsync.db"
    broker_url: str = "redis://localhost:6379/0"
    smtp_url: SecretStr | None = None
    mail_from: str | None = None
    secret_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)

    google_client_id: str | None = None
    google_client_secret: SecretStr | None = None
    google_api_url: str = "https://www.googleapis.com/"
    google_token_url: str = "https://oauth2.googleapis.com/token"
    google_auth_url: str = "https://accounts.google.com/o/oauth2/v2/auth"
    google_revoke_url: str = "https://oauth2.googleapis.com/revoke"
    google_userinfo_url: str = "https://openidconnect.googleapis.com/v1/userinfo"
    google_redirect_uri: str = "http://127.0.0.1:8765/oauth/google/callback"
    #: Calendar API requests per account per quota window (Google's default: 600/min).
    google_quota_per_user: int = 600
    #: Calendar API requests per project per quota window (Google's default: 10,000/min).
    google_quota_per_project: int = 10_000
    #: Length of the quota window, in seconds (Google counts per minute).
    quota_window_seconds: float = 60.0

    ms_client_id: str | None = None
    ms_client_secret: SecretStr | None = None
    ms_tenant: str = "common"
    ms_authority_url: str = "https://login.microsoftonline.com"
    graph_url: str = "https://graph.microsoft.com/v1.0"
    ms_redirect_uri: str = "http://localhost:8765/oauth/outlook/callback"
    #: CA bundle for the Microsoft endpoints (only needed for a private authority, e.g. the emulator).
    ms_ca_bundle: str | None = None
    #: Concurrent Graph requests per mailbox (Outlook allows 4).
    outlook_max_concurrent: int = 4
    #: Graph requests per mailbox per Outlook window (10,000 per 10 minutes).
    outlook_quota_per_window: int = 10_000
    #: Length of the Outlook quota window, in seconds.
    outlook_quota_window_seconds: float = 600.0

    #: Attempts per placement before it is marked failed (each attempt is one send).
    max_attempts: int = 6
    #: First retry delay in milliseconds; doubles per attempt with jitter.
    retry_min_backoff_ms: int = 5_000
    #: Upper bound on one retry delay, in milliseconds.
    retry_max_backoff_ms: int = 600_000
    #: Seconds a worker may hold a placement before another may take it over.
    lease_seconds: int = 600
    #: Seconds before an SMTP or HTTP call is abandoned as a timeout.
    io_timeout_seconds: float = 30.0
    #: Seconds between sweeps that re-enqueue lagging sessions (0 disables the periodic sweep).
    sweep_interval_seconds: int = 300
    #: Worker threads for the in-process worker of ``memory://``.
    embedded_worker_threads: int = 4
    #: Port of the workers' Prometheus endpoint (Dramatiq's and calsync's metrics); 0 turns it off.
    metrics_port: int = 0
    #: Address the metrics endpoint binds; loopback unless a scraper elsewhere needs it.
    metrics_host: str = "127.0.0.1"

    @field_validator("secret_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [k.strip() for k in value.split(",") if k.strip()]
        return value

    def require(self, name: str) -> str:
        """Return a setting that this code path cannot run without, or raise naming it."""
        value = getattr(self, name)
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if value in (None, "", []):
            raise ConfigError(f"CALSYNC_{name.upper()} is not set; it is required here")
        return value


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Read the settings once per process; ``get_settings.cache_clear()`` re-reads them."""
    try:
        return Settings()
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ConfigError(f"CALSYNC_{str(err['loc'][0]).upper()}: {err['msg']}") from None
