"""``calsync doctor``: is every part calsync depends on there and usable?

Each check is a small function of the settings returning one :class:`Check`;
:func:`run_checks` runs them all, so one dead part never hides another. A
check never raises and never prints a secret: details name hosts, ports and
users, not URLs with passwords in them.
"""

from __future__ import annotations

import os
import smtplib
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

from sync.config import Settings, get_settings
from sync.errors import CalsyncError

#: Seconds any one probe may take: doctor answers an operator, it must not hang on a dead host.
TIMEOUT = 3.0
#: Stored credentials tried against the keys; enough to catch a dropped key, bounded on big tables.
CREDENTIAL_SAMPLE = 50


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def first_line(exc: BaseException) -> str:
    """A driver's own message on one line (SQLAlchemy wraps it in ``orig`` together with the SQL)."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# -- configuration -----------------------------------------------------------------------------------


def check_configuration(settings: Settings) -> Check:
    """The settings loaded; the worker additionally needs somewhere to send invites from and through."""
    missing = [f"CALSYNC_{name.upper()}" for name in ("smtp_url", "mail_from") if not _value(settings, name)]
    if missing:
        return Check("configuration", False, f"{', '.join(missing)} not set; the worker needs them to mail invites")
    providers = [name for name, on in (("google", settings.google_client_id), ("outlook", settings.ms_client_id)) if on]
    return Check("configuration", True, f"loaded; providers: {', '.join(providers) or 'none (email only)'}")


def _value(settings: Settings, name: str) -> str | None:
    value = getattr(settings, name)
    return value.get_secret_value() if hasattr(value, "get_secret_value") else value


# -- database ----------------------------------------------------------------------------------------


def database_url(settings: Settings) -> str:
    """The configured URL, with a connect timeout on PostgreSQL, whose default is the OS's (minutes)."""
    from sqlalchemy.engine import make_url

    url = make_url(settings.database_url)
    if url.get_backend_name() == "postgresql" and "connect_timeout" not in url.query:
        url = url.update_query_dict({"connect_timeout": str(int(TIMEOUT))})
    return url.render_as_string(hide_password=False)


def check_database(settings: Settings) -> Check:
    from sqlalchemy.engine import make_url

    from sync.store.migrate import pending_revisions

    shown = make_url(settings.database_url).render_as_string(hide_password=True)
    current, head = pending_revisions(database_url(settings))
    if current != head:
        return Check("database", False,
                     f"{shown} is at {current or '(empty)'}, head is {head}: run `calsync db upgrade`")
    return Check("database", True, f"{shown} reachable, migrated to {head}")


# -- broker ------------------------------------------------------------------------------------------


def check_broker(settings: Settings) -> Check:
    from sync.engine.queues import broker_client

    client = broker_client(settings)
    if client is None:
        return Check("broker", True, "embedded (memory://): each command runs its own worker; no Redis needed")
    with client:
        where = _redis_address(client.connection_pool.connection_kwargs)
        try:
            client.ping()
        except Exception as exc:  # any redis or socket error: the broker is not usable
            return Check("broker", False, f"redis at {where}: {first_line(exc)}")
    return Check("broker", True, f"redis at {where} answers PING")


def _redis_address(kwargs: dict[str, Any]) -> str:
    if "path" in kwargs:
        return f"unix:{kwargs['path']}/{kwargs.get('db', 0)}"
    return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"


# -- SMTP --------------------------------------------------------------------------------------------


def check_smtp(settings: Settings) -> Check:
    """Connect, EHLO, STARTTLS if asked, log in if credentials are given; nothing is sent."""
    from sync.mail.transport import open_smtp, parse_smtp_url

    url = settings.require("smtp_url")
    if urlsplit(url).scheme.lower() == "file":
        return _check_mail_directory(url)
    server = parse_smtp_url(url)
    steps: list[str] = []
    try:
        _close(open_smtp(server, TIMEOUT, steps))
    except smtplib.SMTPHeloError as exc:
        return Check("smtp", False, f"{server.address} answered EHLO with {exc.smtp_code}")
    except smtplib.SMTPAuthenticationError as exc:
        return Check("smtp", False, f"{server.address} refused the login as {server.username}: {exc.smtp_code} "
                                    f"{_reply(exc.smtp_error)}")
    except smtplib.SMTPNotSupportedError as exc:
        return Check("smtp", False, f"{server.address} does not support what the URL asks: {exc}")
    except TimeoutError:
        return Check("smtp", False, f"{server.address} did not answer within {TIMEOUT:g}s")
    except OSError as exc:  # refused connections, TLS failures, every SMTPException
        return Check("smtp", False, f"{server.address}: {first_line(exc)}")
    return Check("smtp", True, f"{server.address}: {', '.join(steps)} ok")


def _close(conn: smtplib.SMTP) -> None:
    try:
        conn.quit()
    except OSError:
        conn.close()


def _reply(reply: bytes | str) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
    return " ".join(text.split())


def _check_mail_directory(url: str) -> Check:
    """``file://``: the transport creates the directory on first send, so a writable ancestor is enough."""
    from sync.mail.transport import FileTransport, transport_from_url

    transport = transport_from_url(url, timeout=TIMEOUT)
    assert isinstance(transport, FileTransport)
    directory = transport.directory
    if directory.is_dir():
        try:
            with tempfile.TemporaryFile(dir=directory):
                pass
        except OSError as exc:
            return Check("smtp", False, f"cannot write into {directory}: {exc.strerror or exc}")
        return Check("smtp", True, f"writes .eml files into {directory} (writable)")
    ancestor = next((p for p in directory.parents if p.exists()), None)
    if ancestor is None or not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
        return Check("smtp", False, f"{directory} does not exist and cannot be created under {ancestor}")
    return Check("smtp", True, f"writes .eml files into {directory} (created on first send)")


# -- secret keys -------------------------------------------------------------------------------------


def check_secret_keys(settings: Settings) -> Check:
    """Keys present and well-formed, and they open the credentials already stored.

    A key dropped before ``calsync keys rotate`` finished shows up here as
    credentials that no longer open.
    """
    from sqlalchemy import func, select
    from sqlalchemy.exc import SQLAlchemyError

    from sync.errors import Misconfigured
    from sync.store.crypto import CredentialBox
    from sync.store.db import Store
    from sync.store.models import Integration

    keys = [k.get_secret_value() for k in settings.secret_keys]
    # Only credentials that should open: a disconnected integration's were wiped on purpose.
    readable = Integration.credentials != b""
    try:
        with Store(database_url(settings)).tx() as db:
            stored = db.scalar(select(func.count()).select_from(Integration).where(readable)) or 0
            blobs = list(db.scalars(select(Integration.credentials).where(readable)
                                    .order_by(Integration.updated_at.desc()).limit(CREDENTIAL_SAMPLE)))
    except SQLAlchemyError as exc:
        return Check("secret keys", False, f"cannot read the stored credentials: {first_line(exc)}")
    if not keys and not stored and not (settings.google_client_id or settings.ms_client_id):
        return Check("secret keys", True, "not set; not needed (no provider configured, no stored credentials)")
    box = CredentialBox(keys)  # raises ConfigError naming the variable when missing or malformed
    if not stored:
        return Check("secret keys", True, f"{len(keys)} key(s) load; no stored credentials to open yet")
    opened = 0
    for blob in blobs:
        try:
            box.open(blob)
            opened += 1
        except Misconfigured:
            pass
    sampled = f"{opened} of {len(blobs)}" + ("" if len(blobs) == stored else f" sampled ({stored} stored)")
    if opened < len(blobs):
        return Check("secret keys", False, f"{sampled} stored credentials open with CALSYNC_SECRET_KEYS: "
                                           "was a key dropped before `calsync keys rotate`?")
    return Check("secret keys", True, f"{len(keys)} key(s); {sampled} stored credentials open")


# -- held placements ---------------------------------------------------------------------------------


def check_held(settings: Settings) -> Check:
    """Placements held because calsync's own configuration is at fault (an OAuth client the
    provider refuses, credentials no key opens): the fix is a setting, and they resume by themselves."""
    from sqlalchemy import func, select

    from sync.core.states import State
    from sync.store.db import Store
    from sync.store.models import Placement

    with Store(database_url(settings)).tx() as db:
        held = db.scalar(select(func.count()).select_from(Placement).where(Placement.state == State.HELD)) or 0
        causes = sorted(r or "" for r in db.scalars(select(Placement.last_error)
                                                    .where(Placement.state == State.HELD).distinct().limit(3)))
    if held:
        return Check("placements", False, f"{held} held by configuration: {'; '.join(causes)}")
    return Check("placements", True, "none held by configuration")


# -- provider endpoints ------------------------------------------------------------------------------


def check_google(settings: Settings) -> Check:
    token = urlsplit(settings.google_token_url)
    return _endpoints("google", [f"{token.scheme}://{token.netloc}/", settings.google_api_url], None)


def check_outlook(settings: Settings) -> Check:
    authority = f"{settings.ms_authority_url.rstrip('/')}/{settings.ms_tenant}"
    return _endpoints("outlook", [f"{authority}/v2.0/.well-known/openid-configuration", settings.graph_url],
                      settings.ms_ca_bundle)


def _endpoints(name: str, urls: list[str], ca_bundle: str | None) -> Check:
    """Any HTTP answer, even 404, proves DNS, routing and TLS; only no answer is a failure."""
    import requests

    from sync.providers.pinned_ca import session_trusting

    answers = []
    with session_trusting(ca_bundle) as http:
        for url in urls:
            try:
                status = http.get(url, timeout=TIMEOUT, allow_redirects=False).status_code
            except requests.Timeout:
                return Check(name, False, f"{url} did not answer within {TIMEOUT:g}s")
            except requests.RequestException as exc:
                return Check(name, False, f"{url}: {first_line(exc)}")
            answers.append(f"{url} → {status}")
    return Check(name, True, "; ".join(answers))


def check_providers(settings: Settings) -> list[Check]:
    checks = []
    if settings.google_client_id:
        checks.append(_safely("google", check_google, settings))
    if settings.ms_client_id:
        checks.append(_safely("outlook", check_outlook, settings))
    return checks or [Check("providers", True, "none configured (email only)")]


# -- running -----------------------------------------------------------------------------------------

#: (name, check) in the order they are printed; each name is what its line says if it crashes.
CHECKS: list[tuple[str, Callable[[Settings], Check]]] = [
    ("configuration", check_configuration),
    ("database", check_database),
    ("broker", check_broker),
    ("smtp", check_smtp),
    ("secret keys", check_secret_keys),
    ("placements", check_held),
]


def _safely(name: str, check: Callable[[Settings], Check], settings: Settings) -> Check:
    """Turn whatever a check raises into its failed line: doctor reports, it does not crash."""
    try:
        return check(settings)
    except CalsyncError as exc:
        return Check(name, False, " ".join(str(exc).split()))
    except Exception as exc:  # a database or network library's own error
        return Check(name, False, first_line(exc))


def run_checks(load: Callable[[], Settings] = get_settings) -> list[Check]:
    try:
        settings = load()
    except CalsyncError as exc:
        # Nothing else can be checked without settings; say so on each line rather than hide the checks.
        return [Check("configuration", False, str(exc))] + [
            Check(name, False, "not checked: the configuration does not load") for name, _ in CHECKS[1:]]
    return [_safely(name, check, settings) for name, check in CHECKS] + check_providers(settings)
