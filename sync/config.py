"""Settings from ``CALSYNC_*`` environment variables and an optional ``.env`` file.

Every setting is typed and range-checked when it loads, so a value that makes
no sense (zero attempts, a port above 65535, a sender that is not an address)
stops the command that reads it at once, instead of crashing or hanging every
reconcile later. All invalid settings are reported together, in one
:class:`~sync.errors.ConfigError` with one line per variable, so an operator
fixes them in one pass rather than one per restart.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, EmailStr, Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from sync.errors import ConfigError

PREFIX = "CALSYNC_"

#: Broker URLs that name a Redis server; ``memory://`` is the embedded broker.
REDIS_PREFIXES = ("redis://", "rediss://", "unix://")
#: Schemes ``make_broker`` understands (``sync.engine.broker``), as the prefixes it checks.
BROKER_PREFIXES = (*REDIS_PREFIXES, "memory://")
#: Schemes ``transport_from_url`` understands (``sync.mail.transport``).
SMTP_SCHEMES = ("smtp", "smtps", "file")


# -- URL checks, each naming what the setting must be and never echoing a password ----------------------


def _sqlalchemy_url(value: str) -> str:
    """The store's URL must parse, or every command that opens the store fails with SQLAlchemy's traceback."""
    from sqlalchemy.engine import make_url

    try:
        make_url(value)
    except Exception:  # ArgumentError for the shape, ValueError for a port that is not a number
        raise ValueError("must be a SQLAlchemy URL such as sqlite:///calsync.db or "
                         "postgresql+psycopg://user:password@host:5432/dbname") from None
    return value


def uses_redis(broker_url: str) -> bool:
    """Whether the (already validated) broker URL names a Redis server rather than the embedded broker."""
    return broker_url.startswith(REDIS_PREFIXES)


def _broker_url(value: str) -> str:
    if not value.startswith(BROKER_PREFIXES):
        raise ValueError(f"must be a {', '.join(BROKER_PREFIXES[:-1])} or {BROKER_PREFIXES[-1]} URL{_scheme(value)}")
    return value


def _smtp_url(value: SecretStr | None) -> SecretStr | None:
    """Parsed as the transport will parse it, so a bad port or a misspelt option shows at start, not at first send."""
    if value is None:
        return None
    from sync.mail.transport import SETTING, parse_smtp_url

    url = value.get_secret_value()
    scheme = urlsplit(url).scheme.lower()
    if scheme not in SMTP_SCHEMES:
        raise ValueError(f"must be an smtp://, smtps:// or file:// URL{_scheme(url)}")
    if scheme != "file":
        try:
            parse_smtp_url(url)  # its messages name host and port, never the password
        except ConfigError as exc:
            raise ValueError(str(exc).removeprefix(f"{SETTING}: ")) from None
    return value


def _http_url(value: str) -> str:
    """Provider endpoints and redirect URIs: anything else fails only once a person connects or a copy is sent."""
    parts = urlsplit(value)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    return value


def _scheme(url: str) -> str:
    """``, not http://``: the scheme alone, since the rest of a URL may hold a password."""
    scheme = urlsplit(url).scheme if "://" in url else ""
    return f", not {scheme}://" if scheme else ""


DatabaseUrl = Annotated[str, AfterValidator(_sqlalchemy_url)]
BrokerUrl = Annotated[str, AfterValidator(_broker_url)]
SmtpUrl = Annotated[SecretStr | None, AfterValidator(_smtp_url)]
HttpUrl = Annotated[str, AfterValidator(_http_url)]
#: A whole number of at least 1: counts, quotas, threads.
AtLeastOne = Annotated[int, Field(ge=1)]
#: A length of time in seconds; zero or infinity would mean "never" or "always", neither of which works.
Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Milliseconds = Annotated[int, Field(ge=0)]


class Settings(BaseSettings):
    """Every CALSYNC_* setting (the README's Configuration section lists them) and its valid range.

    Built from the environment or in code, an invalid value raises one
    :class:`ConfigError` naming every invalid variable, one per line.
    """

    model_config = SettingsConfigDict(env_prefix=PREFIX, env_file=".env", env_file_encoding="utf-8",
                                      extra="ignore")

    database_url: DatabaseUrl = "sqlite:///calsync.db"
    broker_url: BrokerUrl = "redis://localhost:6379/0"
    smtp_url: SmtpUrl = None
    mail_from: EmailStr | None = None
    secret_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)

    google_client_id: str | None = None
    google_client_secret: SecretStr | None = None
    google_api_url: HttpUrl = "https://www.googleapis.com/"
    google_token_url: HttpUrl = "https://oauth2.googleapis.com/token"
    google_auth_url: HttpUrl = "https://accounts.google.com/o/oauth2/v2/auth"
    google_revoke_url: HttpUrl = "https://oauth2.googleapis.com/revoke"
    google_userinfo_url: HttpUrl = "https://openidconnect.googleapis.com/v1/userinfo"
    google_redirect_uri: HttpUrl = "http://127.0.0.1:8765/oauth/google/callback"
    #: Calendar API requests per account per quota window (Google's default: 600/min).
    google_quota_per_user: AtLeastOne = 600
    #: Calendar API requests per project per quota window (Google's default: 10,000/min).
    google_quota_per_project: AtLeastOne = 10_000
    #: Length of the quota window, in seconds (Google counts per minute).
    quota_window_seconds: Seconds = 60.0

    ms_client_id: str | None = None
    ms_client_secret: SecretStr | None = None
    ms_tenant: Annotated[str, Field(min_length=1)] = "common"
    ms_authority_url: HttpUrl = "https://login.microsoftonline.com"
    graph_url: HttpUrl = "https://graph.microsoft.com/v1.0"
    ms_redirect_uri: HttpUrl = "http://localhost:8765/oauth/outlook/callback"
    #: CA bundle for the Microsoft endpoints (only needed for a private authority, e.g. the emulator).
    ms_ca_bundle: str | None = None
    #: Concurrent Graph requests per mailbox (Outlook allows 4).
    outlook_max_concurrent: AtLeastOne = 4
    #: Graph requests per mailbox per Outlook window (10,000 per 10 minutes).
    outlook_quota_per_window: AtLeastOne = 10_000
    #: Length of the Outlook quota window, in seconds.
    outlook_quota_window_seconds: Seconds = 600.0

    #: Attempts per placement before it is marked failed (each attempt is one send).
    max_attempts: AtLeastOne = 6
    #: First retry delay in milliseconds; doubles per attempt with jitter.
    retry_min_backoff_ms: Milliseconds = 5_000
    #: Upper bound on one retry delay, in milliseconds; at least ``retry_min_backoff_ms``.
    retry_max_backoff_ms: Milliseconds = 600_000
    #: Seconds a worker may hold a placement before another may take it over.
    lease_seconds: AtLeastOne = 600
    #: Seconds before an SMTP or HTTP call is abandoned as a timeout.
    io_timeout_seconds: Seconds = 30.0
    #: Seconds between sweeps that re-enqueue lagging sessions (0 disables the periodic sweep).
    sweep_interval_seconds: Annotated[int, Field(ge=0)] = 300
    #: Worker threads for the in-process worker of ``memory://`` (0 would wait forever on the queue).
    embedded_worker_threads: AtLeastOne = 4
    #: Sessions that have already ended: ``skip`` places no new copy of them (updates and
    #: withdrawals of copies people already hold still go out); ``send`` treats them like any other.
    past_sessions: Literal["skip", "send"] = "skip"
    #: Port of the workers' Prometheus endpoint (Dramatiq's and calsync's metrics); 0 turns it off.
    metrics_port: Annotated[int, Field(ge=0, le=65_535)] = 0
    #: Address the metrics endpoint binds; loopback unless a scraper elsewhere needs it.
    metrics_host: Annotated[str, Field(min_length=1)] = "127.0.0.1"

    #: Address ``calsync serve`` binds (the default OAuth redirect URIs name port 8765 on loopback).
    http_host: Annotated[str, Field(min_length=1)] = "127.0.0.1"
    http_port: Annotated[int, Field(ge=1, le=65_535)] = 8765
    #: The root URL people's browsers reach ``calsync serve`` at, for connect links; default http://HOST:PORT.
    public_url: HttpUrl | None = None
    #: Bearer tokens of the platform API, comma-separated: add the new one, move the platform, drop the old.
    api_tokens: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    #: Largest request body ``calsync serve`` reads, in bytes (413 above it).
    http_max_body_bytes: AtLeastOne = 1_048_576
    #: Hosts a connect link may send the browser back to (``return_to``), comma-separated.
    return_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    #: How long a connect link stays valid, in seconds (7 days).
    connect_link_ttl_seconds: Seconds = 7 * 24 * 3600.0
    #: Where calsync POSTs events for the platform; unset sends none.
    webhook_url: HttpUrl | None = None
    #: Secrets webhooks are signed with, comma-separated: every one signs, so they rotate without a gap.
    webhook_secrets: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    #: Email a person a reconnect link (at most one a day) when their calendar connection dies.
    reconnect_email: bool = False

    def __init__(self, **values: Any) -> None:
        """Load and check; pydantic's multi-paragraph report becomes one line per invalid variable."""
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise ConfigError(describe(exc)) from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{_env_file()}: not UTF-8 text ({exc.reason} at byte {exc.start}); "
                              "save it as UTF-8") from None
        except OSError as exc:  # a .env that exists but cannot be read
            raise ConfigError(f"{_env_file()}: cannot be read ({exc.strerror or exc})") from None

    @field_validator("smtp_url", "mail_from", "google_client_id", "google_client_secret", "ms_client_id",
                     "ms_client_secret", "ms_ca_bundle", "public_url", "webhook_url", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        """``CALSYNC_MAIL_FROM=`` (as in config/example.env) means "not set", not "an empty address"."""
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("secret_keys", "api_tokens", "webhook_secrets", "return_hosts", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [k.strip() for k in value.split(",") if k.strip()]
        return value

    @field_validator("retry_max_backoff_ms")
    @classmethod
    def _cap_not_below_first(cls, value: int, info: ValidationInfo) -> int:
        """A cap below the first delay would silently shorten every retry; say so instead."""
        first = info.data.get("retry_min_backoff_ms")  # absent when that setting is itself invalid
        if first is not None and value < first:
            raise ValueError(f"must be at least {PREFIX}RETRY_MIN_BACKOFF_MS ({first})")
        return value

    @property
    def base_url(self) -> str:
        """Where people's browsers reach ``calsync serve``: CALSYNC_PUBLIC_URL, or http://HOST:PORT."""
        return (self.public_url or f"http://{self.http_host}:{self.http_port}").rstrip("/")

    def require(self, name: str) -> str:
        """Return a setting that this code path cannot run without, or raise naming it."""
        value = getattr(self, name)
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if value in (None, "", []):
            raise ConfigError(f"{PREFIX}{name.upper()} is not set; it is required here")
        return value


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Read the settings once per process; ``get_settings.cache_clear()`` re-reads them.

    Raises:
      ConfigError: one line per invalid variable, or one line naming an unreadable ``.env``.
    """
    return Settings()


# -- one line per invalid variable -----------------------------------------------------------------------

#: Settings whose value may hold a password or a key: their errors never repeat the value.
SECRET_BEARING = frozenset({"database_url", "broker_url", "smtp_url", "secret_keys", "google_client_secret",
                            "ms_client_secret", "api_tokens", "webhook_secrets", "webhook_url"})

#: pydantic's error types, in the words of an operator's checklist.
_WORDS: dict[str, Callable[[dict[str, Any]], str]] = {
    "greater_than_equal": lambda ctx: f"must be at least {_number(ctx['ge'])}",
    "greater_than": lambda ctx: f"must be greater than {_number(ctx['gt'])}",
    "less_than_equal": lambda ctx: f"must be at most {_number(ctx['le'])}",
    "less_than": lambda ctx: f"must be less than {_number(ctx['lt'])}",
    "int_parsing": lambda ctx: "must be a whole number",
    "int_from_float": lambda ctx: "must be a whole number",
    "float_parsing": lambda ctx: "must be a number",
    "finite_number": lambda ctx: "must be a finite number",
    "string_too_short": lambda ctx: "must not be empty",
}


def describe(exc: ValidationError) -> str:
    """Every invalid setting, one line each (``CALSYNC_MAX_ATTEMPTS: must be at least 1, got 0``), in field order."""
    reasons: dict[str, list[str]] = {}
    for error in exc.errors(include_url=False):
        field = str(error["loc"][0]) if error["loc"] else ""
        reasons.setdefault(field, []).append(_reason(field, error))
    return "\n".join(f"{_variable(field)}: {'; '.join(dict.fromkeys(why))}" for field, why in reasons.items())


def _reason(field: str, error: ErrorDetails) -> str:
    ctx = error.get("ctx") or {}
    words = _WORDS.get(error["type"])
    if words is not None:
        text = words(ctx)
    elif "reason" in ctx:  # EmailStr: email-validator's own explanation
        text = f"must be an email address ({str(ctx['reason']).rstrip('.')})"
    else:
        text = error["msg"].removeprefix("Value error, ")
    text = " ".join(text.split())
    silent = field in SECRET_BEARING or error["type"] == "string_too_short"  # secret, or nothing to show
    if silent or not isinstance(error["input"], str | int | float):
        return text
    return f"{text}, got {_shown(error['input'])}"


def _variable(field: str) -> str:
    return f"{PREFIX}{field.upper()}" if field else "settings"


def _number(value: Any) -> str:
    """``0`` rather than pydantic's ``0.0`` for a bound like ``gt=0`` on a float."""
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _shown(value: str | int | float) -> str:
    """A number as typed (``got 0``), anything else quoted so blanks and spaces are visible (``got ''``)."""
    if not isinstance(value, str):
        return _number(value)
    try:
        float(value)
    except ValueError:
        return repr(value)
    return value if value == value.strip() else repr(value)


def _env_file() -> Path:
    """The ``.env`` that failed to read, as an absolute path: the operator may not know which directory was used."""
    return Path(str(Settings.model_config["env_file"])).resolve()
