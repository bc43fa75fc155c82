"""The Google Calendar channel, on google-api-python-client and google-auth.

One Calendar service is built per process from the discovery document that
ships in the package, so it works against any root URL (the emulator in
tests) with no network. Each call runs with the person's own credentials and
first takes a slot from the shared quota (600/min per account, 10,000/min per
project by default), so bulk changes stay under Google's limits instead of
collecting 403/429s.

Idempotency comes from client-chosen event ids: an insert that is retried
after a lost response answers 409 and becomes an update, so no event is ever
created twice.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import httplib2
from google.auth.exceptions import RefreshError, TransportError
from google.oauth2.credentials import Credentials
from google_auth_httplib2 import AuthorizedHttp
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError

from sync import quota
from sync.config import Settings
from sync.core.backoff import parse_retry_after, rate_limit_delay
from sync.core.drift import Observed
from sync.core.render import RenderedEvent
from sync.errors import AuthError, Misconfigured, PermanentError, Throttled, TransientError
from sync.providers.channel import ProviderChannel, Receipt, Target
from sync.providers.google_events import TAG_SESSION, TAG_USER, event_id, generation_of, observed, to_google
from sync.store.crypto import CredentialBox
from sync.store.db import Store
from sync.store.integrations import credentials_of

SCOPES = ("https://www.googleapis.com/auth/calendar.events.owned", "openid", "email")
#: The Calendar API's service path under the root URL.
SERVICE_PATH = "calendar/v3/"
#: Reasons Google gives for rate limiting; with 429 they mean "slow down", nothing worse.
RATE_REASONS = {"rateLimitExceeded", "userRateLimitExceeded", "quotaExceeded"}
#: 403 reasons that mean the grant itself is not good enough: only a reconnect helps.
GRANT_REASONS = {"insufficientPermissions", "accessNotConfigured", "authError", "dailyLimitExceededUnreg"}
#: Token-endpoint errors about calsync's OAuth client, not the person's grant.
CLIENT_FAULTS = ("invalid_client", "unauthorized_client")
#: Fresh ids tried when Google will not revive a deleted event's id.
MAX_GENERATIONS = 8


@lru_cache(maxsize=4)
def calendar_service(api_url: str) -> Any:
    """Built once per process; requests carry their own authorised http per call."""
    root = api_url if api_url.endswith("/") else api_url + "/"
    if not root.endswith(SERVICE_PATH):
        root += SERVICE_PATH
    return build("calendar", "v3", http=httplib2.Http(), static_discovery=True,
                 client_options={"api_endpoint": root}, cache_discovery=False)


@dataclass
class _Account:
    integration_id: int
    account: str
    calendar_id: str
    credentials: Credentials
    fingerprint: str


def _reason(exc: HttpError) -> str:
    details = exc.error_details if isinstance(exc.error_details, list) else []
    for d in details:
        if isinstance(d, dict) and d.get("reason"):
            return str(d["reason"])
    return ""


def classify(exc: Exception, *, what: str) -> Exception:
    """Map a client-library failure onto calsync's error types."""
    if isinstance(exc, RefreshError):
        # google-auth puts "invalid_grant: Token has been expired or revoked." in args[0].
        text = str(exc.args[0]) if exc.args else str(exc)
        if any(code in text for code in CLIENT_FAULTS):
            return Misconfigured(f"Google refused calsync's OAuth client ({text}): "
                                 "check CALSYNC_GOOGLE_CLIENT_ID / CALSYNC_GOOGLE_CLIENT_SECRET")
        if "invalid_grant" in text or not getattr(exc, "retryable", False):
            return AuthError(f"Google refresh token rejected ({text})")
        return TransientError(f"Google token endpoint unavailable while {what}")
    if isinstance(exc, HttpError):
        status, reason = exc.status_code, _reason(exc)
        retry_after = parse_retry_after(exc.resp.get("retry-after") if exc.resp is not None else None)
        label = f"Google {status}{' ' + reason if reason else ''} while {what}"
        if status == 429 or (status == 403 and reason in RATE_REASONS):
            return Throttled(label, retry_after=rate_limit_delay(retry_after), status=status)
        if status >= 500:
            return TransientError(label, retry_after=retry_after, status=status)
        if status == 401 or (status == 403 and reason in GRANT_REASONS):
            return AuthError(label, status=status)
        return PermanentError(label, status=status)
    if isinstance(exc, (TimeoutError, ConnectionError, TransportError, httplib2.HttpLib2Error, OSError)):
        return TransientError(f"Google unreachable while {what}: {type(exc).__name__}")
    if isinstance(exc, ValueError):  # a body that is not JSON
        return TransientError(f"Google answered something that is not JSON while {what}")
    return exc


class GoogleChannel(ProviderChannel):
    name = "google"

    def __init__(self, settings: Settings, store: Store, box: CredentialBox, quota_backend: quota.QuotaBackend) -> None:
        super().__init__(settings, store, box, quota_backend)
        self.service = calendar_service(settings.google_api_url)
        self._accounts: dict[int, _Account] = {}
        self._local = threading.local()

    # -- credentials -------------------------------------------------------------------------

    def _account(self, integration_id: int | None) -> _Account:
        with self.store.tx() as db:
            blob, account, calendar = credentials_of(db, integration_id, "Google")
        calendar = calendar or "primary"
        assert integration_id is not None
        fingerprint = hashlib.sha256(blob).hexdigest()
        with self._lock:
            cached = self._accounts.get(integration_id)
            if cached is not None and cached.fingerprint == fingerprint:
                return cached
        secret = self.box.open(blob)
        client_secret = self.settings.google_client_secret
        creds = Credentials(
            token=None, refresh_token=secret.get("refresh_token"), token_uri=self.settings.google_token_url,
            client_id=self.settings.google_client_id,
            client_secret=client_secret.get_secret_value() if client_secret else None,
        )
        acc = _Account(integration_id, account, calendar, creds, fingerprint)
        with self._lock:
            self._accounts[integration_id] = acc
        return acc

    def _http(self, acc: _Account) -> AuthorizedHttp:
        # httplib2.Http is not thread-safe; one per worker thread keeps connections alive.
        http = getattr(self._local, "http", None)
        if http is None:
            http = self._local.http = httplib2.Http(timeout=self.settings.io_timeout_seconds)
        return AuthorizedHttp(acc.credentials, http=http)

    def _write(self, acc: _Account, request: Any, what: str) -> dict[str, Any]:
        """An insert or update, whose answer must be the event: anything else is a broken answer."""
        result = self._execute(acc, request, what)
        if not isinstance(result, dict) or "id" not in result:
            raise TransientError(f"Google answered something that is not an event while {what}")
        return result

    def _execute(self, acc: _Account, request: Any, what: str) -> Any:
        s = self.settings
        quota.acquire(self.quota, [
            quota.Window.guarding(f"google:user:{acc.account}", s.google_quota_per_user, s.quota_window_seconds),
            quota.Window.guarding("google:project", s.google_quota_per_project, s.quota_window_seconds),
        ])
        try:
            return request.execute(http=self._http(acc))
        except Exception as exc:  # mapped below; anything unmapped is re-raised as is
            mapped = classify(exc, what=what)
            if mapped is exc:
                raise
            if isinstance(exc, (ConnectionError, OSError, httplib2.HttpLib2Error)):
                self._local.http = None  # a dropped connection must not be reused
            raise mapped from None

    # -- channel -----------------------------------------------------------------------------

    def place(self, target: Target, event: RenderedEvent) -> Receipt:
        acc = self._account(target.integration_id)
        events = self.service.events()
        if target.external_id:
            try:
                self._write(acc, events.update(calendarId=acc.calendar_id, eventId=target.external_id,
                                               body=to_google(event, target.external_id), sendUpdates="none"),
                            "updating the event")
                return Receipt(target.external_id, "updated")
            except PermanentError as exc:
                # The person deleted it (404/410), or Google will not revive their deletion (403).
                if exc.status not in (403, 404, 410):
                    raise
            start = max(target.generation, generation_of(event.session_id, event.recipient.user_id,
                                                         target.external_id) + 1)
        else:
            start = target.generation
        return self._insert(acc, event, start)

    def _insert(self, acc: _Account, event: RenderedEvent, first_generation: int) -> Receipt:
        events = self.service.events()
        for generation in range(first_generation, first_generation + MAX_GENERATIONS):
            eid = event_id(event.session_id, event.recipient.user_id, generation)
            body = to_google(event, eid)
            try:
                self._write(acc, events.insert(calendarId=acc.calendar_id, body=body, sendUpdates="none"),
                            "creating the event")
                return Receipt(eid, "created", generation)
            except PermanentError as exc:
                if exc.status == 404:
                    raise AuthError(f"calendar {acc.calendar_id!r} not found for {acc.account}", status=404) from None
                if exc.status != 409:
                    raise
            # 409: the id is taken — by our own earlier insert whose answer was lost, or by
            # an event the person deleted. Updating revives ours; if Google refuses, move on.
            try:
                self._write(acc, events.update(calendarId=acc.calendar_id, eventId=eid, body=body,
                                               sendUpdates="none"), "taking over an existing event")
                return Receipt(eid, "updated existing", generation)
            except PermanentError as exc:
                if exc.status not in (403, 404, 410):
                    raise
        raise PermanentError(f"no free event id after {MAX_GENERATIONS} tries for {event.session_id}")

    def inspect(self, target: Target, event: RenderedEvent) -> list[Observed]:
        """Every copy of this placement on the calendar, found by its tag (one filter, as
        Google's docs disagree on how several combine), deleted ones included."""
        return self._copies(self._account(target.integration_id), event)

    def _copies(self, acc: _Account, event: RenderedEvent) -> list[Observed]:
        request = self.service.events().list(
            calendarId=acc.calendar_id, privateExtendedProperty=f"{TAG_SESSION}={event.session_id}",
            showDeleted=True, maxResults=50)
        items = self._execute(acc, request, "reading the calendar").get("items", [])
        mine = [i for i in items if i.get("extendedProperties", {}).get("private", {}).get(TAG_USER)
                == event.recipient.user_id]
        return [observed(i) for i in mine]

    def probe(self, integration_id: int) -> str:
        """One cheap read: proves the token refreshes and the calendar answers."""
        acc = self._account(integration_id)
        self._execute(acc, self.service.events().list(calendarId=acc.calendar_id, maxResults=1),
                      "reading the calendar")
        return f"token ok; calendar {acc.calendar_id!r} of {acc.account} answers"

    def withdraw(self, target: Target, event: RenderedEvent) -> Receipt:
        """Delete every copy that may exist: the recorded event, or with no record the id an
        insert whose answer was lost used; and when an earlier attempt's outcome is unknown
        (a fresh id may have been inserted with its answer lost), every copy found by tag."""
        acc = self._account(target.integration_id)
        ids = [target.external_id or event_id(event.session_id, event.recipient.user_id, target.generation)]
        if target.in_doubt:
            ids += [c.external_id for c in self._copies(acc, event) if not c.cancelled and c.external_id not in ids]
        deleted = []
        for eid in ids:
            try:
                self._execute(acc, self.service.events().delete(calendarId=acc.calendar_id, eventId=eid,
                                                                sendUpdates="none"), "deleting the event")
                deleted.append(eid)
            except PermanentError as exc:
                if not _gone(exc):
                    raise
        return Receipt(ids[0], f"deleted {len(deleted)} of {len(ids)}" if deleted else "already gone")


def _gone(exc: PermanentError) -> bool:
    """404 or 410: the event is not there (deleted by the person, or never created)."""
    return exc.status in (404, 410)
