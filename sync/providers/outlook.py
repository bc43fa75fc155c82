"""The Outlook channel: Microsoft Graph through msal and requests.

Tokens live in one MSAL ``SerializableTokenCache`` per person, sealed with
the Fernet keys and written back only when MSAL changed it. Every Graph call
first takes one of the mailbox's four concurrency slots and a place in its
10,000-per-10-minutes window, shared across worker processes through Redis,
so Outlook has no reason to throttle us.

Creates are idempotent twice over: a deterministic ``transactionId`` lets
Graph drop a repeated POST, and before creating again after a lost answer the
event is looked up by its extended-property tag.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import msal
import requests

from sync import quota
from sync.config import Settings
from sync.core.backoff import parse_retry_after, rate_limit_delay
from sync.core.drift import Observed
from sync.core.render import RenderedEvent
from sync.errors import AuthError, EventGone, Misconfigured, PermanentError, Throttled, TransientError
from sync.providers.channel import ProviderChannel, Receipt, Target
from sync.providers.outlook_events import for_create, observed, tag_filter, to_graph
from sync.providers.pinned_ca import session_trusting
from sync.store.crypto import CredentialBox
from sync.store.db import Store
from sync.store.integrations import credentials_of
from sync.store.models import Integration

#: Delegated permission calsync asks for; MSAL adds openid, profile and offline_access.
SCOPES = ["Calendars.ReadWrite"]
#: AAD error codes that mean the grant is dead and only the person can revive it.
DEAD_GRANT = ("invalid_grant", "interaction_required", "consent_required")
#: AAD error codes about calsync's app registration (a wrong or expired client
#: secret is AADSTS7000215 ``invalid_client``): the operator's to fix, not the person's.
CLIENT_FAULTS = ("invalid_client", "unauthorized_client")


def new_app(settings: Settings, session: requests.Session, http_cache: dict[str, Any],
            cache: msal.SerializableTokenCache | None = None) -> msal.ConfidentialClientApplication:
    secret = settings.ms_client_secret.get_secret_value() if settings.ms_client_secret else None
    private = not settings.ms_authority_url.startswith("https://login.microsoftonline.com")
    return msal.ConfidentialClientApplication(
        settings.require("ms_client_id"), client_credential=secret,
        authority=f"{settings.ms_authority_url.rstrip('/')}/{settings.ms_tenant}",
        token_cache=cache, http_client=session, http_cache=http_cache,
        # A private authority (the emulator) is not in Microsoft's instance list.
        instance_discovery=False if private else None,
    )


def http_session(settings: Settings) -> requests.Session:
    return session_trusting(settings.ms_ca_bundle)


def auth_failure(result: dict[str, Any] | None, what: str) -> Exception:
    """Map an MSAL error result onto calsync's errors."""
    if not result:
        return AuthError(f"no Microsoft account in the token cache while {what}")
    error = str(result.get("error", "unknown"))
    codes = result.get("error_codes") or []
    label = f"Microsoft {error}{' AADSTS' + str(codes[0]) if codes else ''} while {what}"
    if error in CLIENT_FAULTS:
        return Misconfigured(f"{label}: check CALSYNC_MS_CLIENT_ID / CALSYNC_MS_CLIENT_SECRET")
    if error in DEAD_GRANT:
        return AuthError(label)
    return TransientError(label)


@dataclass
class _Mailbox:
    integration_id: int
    account: str
    calendar_id: str | None
    app: msal.ConfidentialClientApplication
    cache: msal.SerializableTokenCache
    lock: threading.Lock


class OutlookChannel(ProviderChannel):
    name = "outlook"

    def __init__(self, settings: Settings, store: Store, box: CredentialBox, quota_backend: quota.QuotaBackend) -> None:
        super().__init__(settings, store, box, quota_backend)
        self.http = http_session(settings)
        self.http_cache: dict[str, Any] = {}
        self._mailboxes: dict[tuple[int, bytes], _Mailbox] = {}

    # -- tokens ------------------------------------------------------------------------------

    def _mailbox(self, integration_id: int | None) -> _Mailbox:
        with self.store.tx() as db:
            blob, account, calendar = credentials_of(db, integration_id, "Outlook")
        assert integration_id is not None
        with self._lock:
            for (iid, seen), box in self._mailboxes.items():
                if iid == integration_id and seen == blob:
                    return box
        secret = self.box.open(blob)
        cache = msal.SerializableTokenCache()
        try:
            cache.deserialize(secret["token_cache"])
        except (KeyError, ValueError, TypeError):
            raise AuthError("stored Outlook token cache is unreadable; the person must reconnect") from None
        mailbox = _Mailbox(integration_id, account, calendar,
                           new_app(self.settings, self.http, self.http_cache, cache), cache, threading.Lock())
        with self._lock:
            self._mailboxes = {k: v for k, v in self._mailboxes.items() if k[0] != integration_id}
            self._mailboxes[(integration_id, blob)] = mailbox
        return mailbox

    def _token(self, mb: _Mailbox, *, force: bool = False) -> str:
        with mb.lock:
            accounts = mb.app.get_accounts()
            if not accounts:
                raise auth_failure(None, "refreshing the token")
            try:
                result = mb.app.acquire_token_silent_with_error(SCOPES, accounts[0], force_refresh=force)
            except (requests.RequestException, ValueError, msal.exceptions.MsalServiceError) as exc:
                # MSAL raises (rather than returns) for a 5xx from the token endpoint.
                raise TransientError(f"Microsoft identity platform unavailable: {type(exc).__name__}") from None
            if not result or "access_token" not in result:
                raise auth_failure(result, "refreshing the token")
            if mb.cache.has_state_changed:
                self._save_cache(mb)
            return str(result["access_token"])

    def _save_cache(self, mb: _Mailbox) -> None:
        sealed = self.box.seal({"token_cache": mb.cache.serialize()})
        with self.store.tx() as db:
            row = db.get(Integration, mb.integration_id)
            if row is not None:
                row.credentials = sealed
        mb.cache.has_state_changed = False
        with self._lock:
            self._mailboxes = {k: v for k, v in self._mailboxes.items() if k[0] != mb.integration_id}
            self._mailboxes[(mb.integration_id, sealed)] = mb

    # -- Graph -------------------------------------------------------------------------------

    def _events_path(self, mb: _Mailbox) -> str:
        base = self.settings.graph_url.rstrip("/") + "/me"
        return f"{base}/calendars/{mb.calendar_id}/events" if mb.calendar_id else f"{base}/events"

    def _call(self, mb: _Mailbox, method: str, url: str, what: str, **kwargs: Any) -> requests.Response:
        s = self.settings
        key = f"outlook:{mb.account}"
        window = quota.Window.guarding(key, s.outlook_quota_per_window, s.outlook_quota_window_seconds)
        # A 10-minute window must not park a worker thread: hand the message back instead.
        quota.acquire(self.quota, [window], max_wait=quota.MAX_INLINE_WAIT)
        extra = kwargs.pop("headers", {})
        for attempt in (0, 1):
            prefer = ", ".join(p for p in ('IdType="ImmutableId"', extra.get("Prefer")) if p)
            headers = {"Authorization": f"Bearer {self._token(mb, force=attempt == 1)}", "Prefer": prefer}
            with quota.slot(self.quota, key, s.outlook_max_concurrent):
                try:
                    resp = self.http.request(method, url, headers=headers, timeout=s.io_timeout_seconds, **kwargs)
                except requests.RequestException as exc:
                    raise TransientError(f"Graph unreachable while {what}: {type(exc).__name__}") from None
            if resp.status_code != 401:
                break
        if resp.status_code >= 400:
            raise self._error(resp, what)
        return resp

    @staticmethod
    def _error(resp: requests.Response, what: str) -> Exception:
        status = resp.status_code
        try:
            code = str(resp.json().get("error", {}).get("code", ""))
        except (ValueError, AttributeError):
            code = ""
        label = f"Graph {status}{' ' + code if code else ''} while {what}"
        retry_after = parse_retry_after(resp.headers.get("Retry-After"))
        if status == 429:
            return Throttled(label, retry_after=rate_limit_delay(retry_after), status=status)
        if status >= 500:
            return TransientError(label, retry_after=retry_after, status=status)
        if status in (401, 403):
            return AuthError(label, status=status)
        if status == 404 and code in ("MailboxNotEnabledForRESTAPI", "ErrorInvalidUser", "ResourceNotFound",
                                      "ErrorNonExistentMailbox"):
            return AuthError(label, status=status)
        return PermanentError(label, status=status)

    @staticmethod
    def _json(resp: requests.Response, what: str) -> dict[str, Any]:
        try:
            data = resp.json()
        except ValueError:
            raise TransientError(f"Graph answered something that is not JSON while {what}") from None
        if not isinstance(data, dict):
            raise TransientError(f"Graph answered something that is not an object while {what}")
        return data

    def inspect(self, target: Target, event: RenderedEvent) -> list[Observed]:
        """Every copy of this placement in the mailbox, found by its tag."""
        mb = self._mailbox(target.integration_id)
        resp = self._call(mb, "GET", self._events_path(mb), "reading the calendar",
                          params={"$filter": tag_filter(event.session_id, event.recipient.user_id), "$top": "50",
                                  "$select": "id,subject,start,end,location,isCancelled"},
                          headers={"Prefer": 'outlook.timezone="UTC"'})
        return [observed(item) for item in self._json(resp, "reading the calendar").get("value", [])]

    def probe(self, integration_id: int) -> str:
        """One cheap read of the calendar itself, which also says whether we may write to it."""
        mb = self._mailbox(integration_id)
        base = self.settings.graph_url.rstrip("/") + "/me"
        url = f"{base}/calendars/{mb.calendar_id}" if mb.calendar_id else f"{base}/calendar"
        cal = self._json(self._call(mb, "GET", url, "reading the calendar"), "reading the calendar")
        if cal.get("canEdit") is False:
            raise AuthError(f"calendar of {mb.account} is read-only for calsync")
        return f"token ok; calendar {cal.get('name', 'Calendar')!r} of {mb.account} is writable"

    def _find(self, mb: _Mailbox, event: RenderedEvent, top: int = 2) -> list[str]:
        """Ids of the copies tagged as this person's copy of this session."""
        resp = self._call(mb, "GET", self._events_path(mb), "looking the event up by its tag",
                          params={"$filter": tag_filter(event.session_id, event.recipient.user_id), "$select": "id",
                                  "$top": str(top)})
        found = self._json(resp, "looking the event up").get("value") or []
        return [str(item["id"]) for item in found]

    # -- channel -----------------------------------------------------------------------------

    def place(self, target: Target, event: RenderedEvent) -> Receipt:
        mb = self._mailbox(target.integration_id)
        if target.external_id:
            try:
                self._call(mb, "PATCH", f"{self._events_path(mb)}/{target.external_id}", "updating the event",
                           json=to_graph(event))
            except PermanentError as exc:
                if exc.status != 404:
                    raise
                if not target.in_doubt:
                    raise EventGone("the person deleted the event in Outlook; resync re-creates it") from None
                # An earlier delete of ours may have removed it, its answer lost: not the person's
                # doing, and the copy is wanted — a new event, under the next generation.
                return self._create(mb, event, target.generation + 1)
            return Receipt(target.external_id, "updated")
        # No recorded id: a first create, or (maybe_exists) one whose answer was lost.
        existing = self._find(mb, event) if target.maybe_exists else []
        if existing:
            self._call(mb, "PATCH", f"{self._events_path(mb)}/{existing[0]}", "updating the found event",
                       json=to_graph(event))
            return Receipt(existing[0], "found and updated")
        return self._create(mb, event, target.generation)

    def _create(self, mb: _Mailbox, event: RenderedEvent, generation: int) -> Receipt:
        # The transactionId is per generation: after a withdrawal Graph must not hand
        # back the deleted event as "the same create".
        resp = self._call(mb, "POST", self._events_path(mb), "creating the event",
                          json=for_create(event, generation))
        created = self._json(resp, "creating the event")
        if "id" not in created:
            raise TransientError("Graph answered a create without an event id")
        return Receipt(str(created["id"]), "created", generation)

    def withdraw(self, target: Target, event: RenderedEvent) -> Receipt:
        """Delete every copy that may exist: the recorded one, and every copy found by tag
        when there is no record or an earlier attempt's outcome is unknown."""
        mb = self._mailbox(target.integration_id)
        ids = [target.external_id] if target.external_id else []
        if not ids or target.in_doubt:
            ids += [i for i in self._find(mb, event, top=50) if i not in ids]
        if not ids:
            return Receipt(None, "nothing to delete")
        deleted = []
        for eid in ids:
            try:
                self._call(mb, "DELETE", f"{self._events_path(mb)}/{eid}", "deleting the event")
                deleted.append(eid)
            except PermanentError as exc:
                if exc.status not in (404, 410):
                    raise
        return Receipt(ids[0], f"deleted {len(deleted)} of {len(ids)}" if deleted else "already gone")
