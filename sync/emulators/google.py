"""A local Google Calendar v3 + OAuth emulator that the real google-api-python-client talks to.

Google cannot be reached from the test machines, so tests, benchmarks and ``calsync demo`` run
the real client (google-api-python-client + google-auth, ``static_discovery=True``) against
this HTTP server on 127.0.0.1::

    emu = GoogleEmulator()                       # starts at once; or `with GoogleEmulator() as emu:`
    refresh = emu.add_user("mentor@example.com")  # returns the refresh token to hand to calsync
    creds = google.oauth2.credentials.Credentials(
        token=None, refresh_token=refresh, token_uri=emu.token_url, client_id="x", client_secret="y")
    service = googleapiclient.discovery.build(
        "calendar", "v3", credentials=creds, static_discovery=True,
        client_options={"api_endpoint": emu.api_endpoint})   # == emu.url + "calendar/v3/"

Root URL form (verified against google-api-python-client 2.202, ``discovery.build_from_document``):
``client_options.api_endpoint`` REPLACES the whole base URL (``rootUrl + servicePath``); the
discovery doc's ``servicePath`` ``calendar/v3/`` is NOT appended. So the endpoint must carry the
service path: ``http://127.0.0.1:PORT/calendar/v3/`` (the real one is
``https://www.googleapis.com/calendar/v3/``). The trailing slash is optional (the client's
``_urljoin`` adds one). Passing the bare root (``emu.url``) sends requests to
``/calendars/primary/events``, which this emulator answers 404 exactly as Google would for
``https://www.googleapis.com/calendars/...``: a configuration that works here works against Google.
The batch URI is not derived from ``api_endpoint`` (google-api-python-client takes it from the
discovery document's ``batchPath``); batch is not emulated (``/batch/calendar/v3`` answers 501).

Python API (all thread-safe; configuration attributes may change at any time):

- lifecycle: ``GoogleEmulator(start=True, port=0, clock=None, revive_cancelled=False,
  extended_property_match="all")``, context manager, ``.stop()``; ``.url`` (root, trailing
  slash), ``.api_endpoint``, ``.token_url``, ``.auth_url``, ``.userinfo_url``, ``.revoke_url``.
- accounts: ``.add_user(email, refresh_token=None, calendars=("primary",), scopes=..., time_zone=)``
  → refresh token; ``.users``; ``.add_calendar``/``.remove_calendar``; ``.issue_refresh_token``;
  ``.access_token_for(email)``; ``.revoke(token)``; ``.revoke_user(email)``;
  ``.expire_access_tokens()``; ``.add_client(id, secret, redirect_uris)`` (none registered =
  any client accepted); ``.consent_decision``, ``.consent_user``, ``.auto_add_users``.
- calendars: ``.events(owner, calendar_id="primary")`` (live), ``.all_events(...)`` (with
  cancelled), ``.event(owner, id)``; as the user in the UI: ``.put_event`` (a foreign event),
  ``.modify_event`` (drift), ``.cancel_event``, ``.purge_event``; ``.expire_sync_tokens()``.
- faults (from :mod:`sync.emulators.base`): ``.fail_next(n, status, reason, retry_after=, body=,
  path_contains=, method=)``, ``.lose_next_response(n, reset=True)``, ``.timeout_next(n, seconds,
  applied=True)``, ``.latency``; quotas: ``.quota_per_user_per_minute`` (600),
  ``.quota_per_project_per_minute`` (10 000), ``.quota_window``, ``.quota_status`` (403|429),
  ``.quota_retry_after`` (None|seconds|"auto"), ``.quota_used(email=None)``, ``.reset_quota()``;
  ``.clock`` (e.g. ``base.FakeClock``) drives quota windows and token/code expiry.
- inspection: ``.request_log`` (entries with method, path, query, status, account, kind
  "api"/"token"/"consent"/..., fault, and info keys op, calendar_id, event_id, send_updates,
  has_attendees), ``.requests(**filters)``, ``.count(status=429)``, ``.clear_log()``,
  ``.internal_errors`` (emulator bugs, answered as 500 — assert it stays empty).

Endpoints (paths as in the shipped discovery document ``calendar.v3.json``):

- ``{api_endpoint}calendars/{calendarId}/events``: insert (POST), list (GET);
  ``.../events/{eventId}``: get, update (PUT), patch, delete; ``calendars/{calendarId}``: get;
  ``users/me/calendarList[/{calendarId}]``: list/get. Other methods answer 501 ``notImplemented``.
- ``token_url`` (POST form): ``refresh_token`` and ``authorization_code`` (+PKCE) grants.
- ``auth_url`` (GET): consent page that 302-redirects at once to ``redirect_uri?code&state&scope``.
- ``userinfo_url`` (``/oauth2/v3/userinfo``; v1/v2 too), ``/oauth2/v3/tokeninfo``, ``revoke_url``.

Behaviour worth knowing (each mirrors Google's Calendar API reference):

- Client-chosen ids: base32hex ``[a-v0-9]{5,1024}`` else 400 ``invalid`` "Invalid resource id value.";
  a second insert of an id (or iCalUID) that exists in the calendar — including a deleted
  (``status: cancelled``) one — is 409 ``duplicate`` "The requested identifier already exists.".
- Delete marks the event cancelled (204); deleting it again is 410 ``deleted`` "Resource has been
  deleted"; unknown id 404 ``notFound``. ``get`` still returns cancelled events.
- Updating/patching a cancelled event is the unsettled case (§1.5: one report says update
  revives it, another got 403). Default ``revive_cancelled=False``: 403 ``forbidden``, so callers
  must take their fallback (a fresh id). ``revive_cancelled=True``: update/patch succeed and the
  event becomes ``confirmed`` unless the body sets ``status``.
- ``privateExtendedProperty``/``sharedExtendedProperty`` repeated: the discovery doc says events
  must match ALL constraints; Google's extended-properties guide says constraints are ORed.
  Default ``extended_property_match="all"`` (the discovery doc); ``"any"`` for the guide.
  Callers that want to be right on real Google should filter with one constraint.
- Request bodies are validated against the discovery document's ``Event`` schema, recursively:
  an unknown field is 400 ``invalid`` naming it (``Unknown name "foo" at 'resource.start'``), a
  value of the wrong JSON type 400 ``invalid``. Output-only fields (kind, etag, created, ...)
  sent back are ignored, as Google does. start/end: missing 400 ``required``, naive dateTime
  without timeZone 400 ``required``, unknown zone 400 ``invalid``, end before start 400
  ``timeRangeEmpty``.
- Attendees are stored; every write records ``has_attendees`` and ``send_updates`` in the
  request log so tests can assert ``count(has_attendees=True) == 0`` and
  ``send_updates == "none"``.
- Auth: every API call needs ``Authorization: Bearer`` with a live access token from the token
  endpoint (lifetime ``token_lifetime`` on ``clock``), else 401 ``authError``; a token whose
  scopes grant none of the method's scopes (from the discovery doc) gets 403
  ``insufficientPermissions``. A refresh token that was revoked (``revoke()``, the revoke
  endpoint) or never issued answers 400 ``invalid_grant`` "Token has been expired or revoked.";
  revoking also kills the grant's access tokens.
- Consent: ``access_type=offline`` is needed for a refresh token, and (as on Google) a second
  consent for the same user and client while the first grant is alive gets NO refresh token
  unless ``prompt=consent`` (switch off with ``reissue_refresh_token=True``). PKCE ``S256`` and
  ``plain`` are checked at the code exchange. No ``id_token`` is issued: the account email comes
  from ``userinfo`` (needs the ``email`` scope, as on Google). ``calendars.get("primary")["id"]``
  is the email too, but that method needs a ``calendar``/``calendar.readonly``/``calendar.calendars``
  scope; ``calendar.events.owned`` alone gets 403 ``insufficientPermissions`` (discovery doc).
- Quotas: sliding window of ``quota_window`` (60 s) on ``clock``, per user (the token's account)
  and per project (the whole emulator). Only admitted requests count. Over the project quota →
  403 ``rateLimitExceeded``; over the user quota → 403 ``userRateLimitExceeded`` (domain
  ``usageLimits``). ``quota_status = 429`` answers 429 ``rateLimitExceeded`` for both instead.
  ``Retry-After`` only when ``quota_retry_after`` is set (seconds, or "auto" = until the window
  frees a slot). Injected faults (``fail_next`` ...) neither consume nor check quota.
- ``lose_next_response``: see :class:`sync.emulators.base.EmulatorServer`; note that httplib2
  re-sends a request once when the server closes the connection cleanly (``reset=False``), so
  the default closes with RST and the client sees ``ConnectionResetError``.
"""

from __future__ import annotations

import base64
import copy
import functools
import hashlib
import json
import re
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from datetime import time as dtime
from typing import Any
from urllib.parse import urlencode, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .base import EmulatorServer, Request, Response, SlidingWindow, _fmt_retry_after, pkce_matches

__all__ = ["DEFAULT_SCOPES", "GoogleEmulator", "GoogleUser"]

SCOPE_PREFIX = "https://www.googleapis.com/auth/"
EMAIL_SCOPE = SCOPE_PREFIX + "userinfo.email"
DEFAULT_SCOPES = (
    SCOPE_PREFIX + "calendar",
    SCOPE_PREFIX + "calendar.events",
    SCOPE_PREFIX + "calendar.events.owned",
    EMAIL_SCOPE,
    "openid",
)
_SCOPE_ALIASES = {"email": EMAIL_SCOPE, "profile": SCOPE_PREFIX + "userinfo.profile"}

EVENT_ID_RE = re.compile(r"^[a-v0-9]{5,1024}$")
SEND_UPDATES = ("all", "externalOnly", "none")
# Fields Google computes; a client sending them back (e.g. a fetched event) is not an error.
SERVER_OWNED = ("kind", "etag", "id", "htmlLink", "created", "updated", "creator", "organizer",
                "hangoutLink", "iCalUID", "recurringEventId", "privateCopy", "locked")
MAX_RESULTS_DEFAULT, MAX_RESULTS_CAP = 250, 2500

_STATUS_DEFAULTS: dict[int, tuple[str, str, str]] = {
    # status: (domain, reason, message) for injected faults without an explicit reason
    400: ("global", "badRequest", "Bad Request"),
    401: ("global", "authError", "Invalid Credentials"),
    403: ("global", "forbidden", "Forbidden"),
    404: ("global", "notFound", "Not Found"),
    409: ("global", "duplicate", "The requested identifier already exists."),
    410: ("global", "deleted", "Resource has been deleted"),
    412: ("global", "conditionNotMet", "Precondition Failed"),
    429: ("usageLimits", "rateLimitExceeded", "Rate Limit Exceeded"),
    500: ("global", "backendError", "Backend Error"),
    502: ("global", "backendError", "Bad Gateway"),
    503: ("global", "backendError", "Service Unavailable"),
    504: ("global", "backendError", "Gateway Timeout"),
}
_REASON_DOMAINS = {"userRateLimitExceeded": "usageLimits", "rateLimitExceeded": "usageLimits",
                   "quotaExceeded": "usageLimits", "timeRangeEmpty": "calendar",
                   "forbiddenForNonOrganizer": "calendar"}


class ApiError(Exception):
    def __init__(self, status: int, reason: str, message: str, domain: str | None = None,
                 headers: dict[str, str] | None = None, extra: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message
        self.domain = domain or _REASON_DOMAINS.get(reason, "global")
        self.headers = headers or {}
        self.extra = extra or {}


class OAuthError(Exception):
    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status, self.error, self.description = status, error, description


def google_error_body(status: int, reason: str, message: str, domain: str = "global",
                      extra: dict[str, Any] | None = None) -> dict[str, Any]:
    item = {"domain": domain, "reason": reason, "message": message}
    item.update(extra or {})
    return {"error": {"errors": [item], "code": status, "message": message}}


def _now_rfc3339() -> str:
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def _fromiso(value: str) -> datetime:
    """RFC 3339 date-time (also lower-case "z"); naive when it carries no offset."""
    v = value.strip()
    if v[-1:] in ("Z", "z"):
        v = v[:-1] + "+00:00"
    return datetime.fromisoformat(v)


def _parse_rfc3339(value: str) -> datetime:
    """An aware datetime; raises ValueError when malformed or without an offset."""
    dt = _fromiso(value)
    if dt.tzinfo is None:
        raise ValueError("missing offset")
    return dt


def _zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        return None


def _norm_scopes(scope: str | None) -> tuple[str, ...]:
    out = []
    for s in (scope or "").split():
        s = _SCOPE_ALIASES.get(s, s)
        if s not in out:
            out.append(s)
    return tuple(out)


def _b32hex_id() -> str:
    return base64.b32hexencode(uuid.uuid4().bytes).decode().rstrip("=").lower()


# ---- schema validation against the discovery document ----------------------------------------


@functools.lru_cache(maxsize=1)
def _load_discovery() -> dict[str, Any]:
    from googleapiclient.discovery_cache import get_static_doc

    doc = get_static_doc("calendar", "v3")
    if doc is None:  # pragma: no cover - the wheel always ships it
        raise RuntimeError("calendar.v3.json not found in googleapiclient/discovery_cache/documents")
    return json.loads(doc)


class _SchemaValidator:
    def __init__(self, discovery: dict[str, Any]) -> None:
        self.schemas: dict[str, Any] = discovery["schemas"]

    def _resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in schema:
            schema = self.schemas[schema["$ref"]]
        return schema

    def validate(self, value: Any, schema: dict[str, Any] | str, path: str = "resource") -> None:
        s = self._resolve({"$ref": schema} if isinstance(schema, str) else schema)
        if value is None:  # JSON null clears a field (patch semantics); always acceptable
            return
        t = s.get("type")
        if t == "object":
            if not isinstance(value, dict):
                raise self._bad(path, value, "object")
            props = s.get("properties")
            addl = s.get("additionalProperties")
            for key, sub in value.items():
                if props is not None and key in props:
                    self.validate(sub, props[key], f"{path}.{key}")
                elif addl is not None:
                    self.validate(sub, addl, f"{path}.{key}")
                elif props is not None:
                    raise ApiError(400, "invalid",
                                   f"Invalid JSON payload received. Unknown name \"{key}\" at '{path}': "
                                   "Cannot find field.", extra={"location": f"{path}.{key}",
                                                                "locationType": "other"})
        elif t == "array":
            if not isinstance(value, list):
                raise self._bad(path, value, "array")
            for i, item in enumerate(value):
                self.validate(item, s.get("items", {}), f"{path}[{i}]")
        elif t == "string":
            if not isinstance(value, str):
                raise self._bad(path, value, "string")
        elif t == "boolean":
            if not isinstance(value, bool):
                raise self._bad(path, value, "boolean")
        elif t == "integer":
            ok = (isinstance(value, int) and not isinstance(value, bool)) or \
                (isinstance(value, str) and re.fullmatch(r"-?\d+", value) is not None)
            if not ok:
                raise self._bad(path, value, "integer")
        elif t == "number" and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise self._bad(path, value, "number")

    @staticmethod
    def _bad(path: str, value: Any, expected: str) -> ApiError:
        return ApiError(400, "invalid",
                        f"Invalid value at '{path}' ({expected}), {json.dumps(value)[:100]}",
                        extra={"location": path, "locationType": "other"})


# ---- state -----------------------------------------------------------------------------------


@dataclass
class GoogleUser:
    email: str
    calendars: dict[str, dict[str, Any]] = field(default_factory=dict)  # "primary" or id -> metadata
    time_zone: str = "UTC"


@dataclass
class _Grant:
    email: str
    client_id: str | None  # None: usable by any client (tokens a platform imported)
    scopes: tuple[str, ...]
    refresh_token: str | None
    revoked: bool = False


@dataclass
class _AccessToken:
    grant: _Grant
    scopes: tuple[str, ...]
    expires_at: float


@dataclass
class _AuthCode:
    email: str
    client_id: str
    redirect_uri: str
    scopes: tuple[str, ...]
    challenge: str | None
    challenge_method: str
    offline: bool
    force_consent: bool
    expires_at: float
    used: bool = False


@dataclass
class _Stored:
    event: dict[str, Any]
    rev: int


class GoogleEmulator(EmulatorServer):
    """Google Calendar v3 + OAuth on 127.0.0.1. See the module docstring for behaviour."""

    default_fault_kinds = frozenset({"api"})

    def __init__(self, start: bool = True, *, host: str = "127.0.0.1", port: int = 0, clock=None,
                 revive_cancelled: bool = False, extended_property_match: str = "all") -> None:
        self.discovery = _load_discovery()
        self._validator = _SchemaValidator(self.discovery)
        self._method_scopes = self._collect_method_scopes()
        # configuration (plain attributes; change them at any time)
        self.revive_cancelled = revive_cancelled
        self.extended_property_match = extended_property_match
        self.quota_per_user_per_minute: int | None = 600
        self.quota_per_project_per_minute: int | None = 10_000
        self.quota_window: float = 60.0
        self.quota_status: int = 403
        self.quota_retry_after: float | str | None = None
        self.token_lifetime: int = 3600
        self.reissue_refresh_token: bool = False
        self.consent_decision: str = "allow"  # or "deny" -> redirect with error=access_denied
        self.consent_user: str | None = None  # who consents when no login_hint is given
        self.auto_add_users: bool = False  # consent for an unknown login_hint creates the user
        # state
        self._users: dict[str, GoogleUser] = {}
        self._grants: list[_Grant] = []
        self._refresh: dict[str, _Grant] = {}
        self._access: dict[str, _AccessToken] = {}
        self._codes: dict[str, _AuthCode] = {}
        self._cals: dict[tuple[str, str], dict[str, _Stored]] = {}
        self._rev = 0
        self._min_sync_rev = 0
        self._quota = SlidingWindow(self.quota_window)
        super().__init__(host=host, port=port, start=start, clock=clock)

    # ---- URLs ------------------------------------------------------------------------------

    @property
    def api_endpoint(self) -> str:
        """What ``client_options={"api_endpoint": ...}`` needs: root + ``calendar/v3/``."""
        return self.url + "calendar/v3/"

    @property
    def token_url(self) -> str:
        return self.url + "token"

    @property
    def auth_url(self) -> str:
        return self.url + "o/oauth2/v2/auth"

    @property
    def revoke_url(self) -> str:
        return self.url + "revoke"

    @property
    def userinfo_url(self) -> str:
        return self.url + "oauth2/v3/userinfo"

    @property
    def batch_url(self) -> str:
        return self.url + "batch/calendar/v3"

    # ---- users, tokens, clients ------------------------------------------------------------

    @property
    def users(self) -> dict[str, GoogleUser]:
        with self.lock:
            return dict(self._users)

    def add_user(self, email: str, refresh_token: str | None = None, calendars: tuple[str, ...] = ("primary",),
                 *, scopes: tuple[str, ...] | str = DEFAULT_SCOPES, time_zone: str = "UTC") -> str:
        """Create (or extend) a Google account; return a refresh token for it usable by any client."""
        email = email.lower()
        with self.lock:
            user = self._users.get(email)
            if user is None:
                user = self._users[email] = GoogleUser(email=email, time_zone=time_zone)
            for cal in ("primary", *calendars):
                self._add_calendar_locked(user, cal)
            scopes_t = _norm_scopes(scopes) if isinstance(scopes, str) else tuple(scopes)
            return self._new_grant(email, None, scopes_t, refresh_token or self._token("1//emu-"))

    def add_calendar(self, email: str, calendar_id: str, summary: str | None = None) -> None:
        with self.lock:
            self._add_calendar_locked(self._user(email), calendar_id, summary)

    def remove_calendar(self, email: str, calendar_id: str) -> None:
        """The calendar disappears: later requests naming it answer 404 ``notFound``."""
        with self.lock:
            user = self._user(email)
            cal = self._canonical_cal(user, calendar_id)
            user.calendars.pop(cal, None)
            self._cals.pop((user.email, cal), None)

    def issue_refresh_token(self, email: str, scopes: tuple[str, ...] = DEFAULT_SCOPES,
                            client_id: str | None = None) -> str:
        with self.lock:
            self._user(email)
            return self._new_grant(email.lower(), client_id, tuple(scopes), self._token("1//emu-"))

    def access_token_for(self, email: str, scopes: tuple[str, ...] = DEFAULT_SCOPES) -> str:
        """A live access token for raw-HTTP tests (bypasses the token endpoint)."""
        with self.lock:
            self._user(email)
            grant = _Grant(email.lower(), None, tuple(scopes), None)
            self._grants.append(grant)
            return self._new_access(grant, grant.scopes)

    def revoke(self, token: str) -> bool:
        """Revoke the grant behind a refresh or access token (its refresh → ``invalid_grant``)."""
        with self.lock:
            grant = self._refresh.get(token) or (self._access[token].grant if token in self._access else None)
            if grant is None:
                return False
            self._revoke_grant(grant)
            return True

    def revoke_user(self, email: str) -> None:
        """The user removes the app's access: every grant for the account dies."""
        with self.lock:
            for grant in self._grants:
                if grant.email == email.lower():
                    self._revoke_grant(grant)

    def expire_access_tokens(self, email: str | None = None) -> None:
        """Access tokens stop working (401) while refresh tokens stay valid."""
        with self.lock:
            for tok, at in list(self._access.items()):
                if email is None or at.grant.email == email.lower():
                    del self._access[tok]

    # ---- calendar inspection and manipulation (what a user would do in the UI) -------------

    def events(self, calendar_owner: str, calendar_id: str = "primary") -> list[dict[str, Any]]:
        """Live (non-cancelled) events, in insertion order."""
        return [e for e in self.all_events(calendar_owner, calendar_id) if e.get("status") != "cancelled"]

    def all_events(self, calendar_owner: str, calendar_id: str = "primary") -> list[dict[str, Any]]:
        with self.lock:
            store = self._store_for(calendar_owner, calendar_id)
            return [copy.deepcopy(s.event) for s in store.values()]

    def event(self, calendar_owner: str, event_id: str, calendar_id: str = "primary") -> dict[str, Any] | None:
        with self.lock:
            s = self._store_for(calendar_owner, calendar_id).get(event_id)
            return copy.deepcopy(s.event) if s else None

    def put_event(self, calendar_owner: str, event: dict[str, Any], calendar_id: str = "primary") -> dict[str, Any]:
        """Place an event directly (a foreign event, or one created in the UI). No validation."""
        with self.lock:
            user = self._user(calendar_owner)
            cal = self._canonical_cal(user, calendar_id)
            ev = self._new_event(user, cal, copy.deepcopy(event), event.get("id") or _b32hex_id())
            self._cals.setdefault((user.email, cal), {})[ev["id"]] = _Stored(ev, self._rev)
            return copy.deepcopy(ev)

    def modify_event(self, calendar_owner: str, event_id: str, changes: dict[str, Any],
                     calendar_id: str = "primary") -> dict[str, Any]:
        """Edit an event as the user would in the UI (drift); ``None`` values remove fields."""
        with self.lock:
            stored = self._store_for(calendar_owner, calendar_id)[event_id]
            _merge_patch(stored.event, copy.deepcopy(changes))
            self._touch(stored)
            return copy.deepcopy(stored.event)

    def cancel_event(self, calendar_owner: str, event_id: str, calendar_id: str = "primary") -> None:
        """The user deletes the event in the UI (it stays, ``status: cancelled``)."""
        self.modify_event(calendar_owner, event_id, {"status": "cancelled"}, calendar_id)

    def purge_event(self, calendar_owner: str, event_id: str, calendar_id: str = "primary") -> None:
        """A cancelled event finally disappears (Google: "will eventually disappear")."""
        with self.lock:
            self._store_for(calendar_owner, calendar_id).pop(event_id, None)

    def expire_sync_tokens(self) -> None:
        """Every sync token issued so far answers 410 ``fullSyncRequired``."""
        with self.lock:
            self._min_sync_rev = self._rev + 1

    def quota_used(self, email: str | None = None) -> int:
        """Admitted requests in the current window, for one user or the whole project."""
        with self.lock:
            return self._quota.used(f"user:{email.lower()}" if email else "project", self.clock())

    def reset_quota(self) -> None:
        with self.lock:
            self._quota.clear()

    # ---- internals: helpers ----------------------------------------------------------------

    def _collect_method_scopes(self) -> dict[tuple[str, str], tuple[str, ...]]:
        out = {}
        for res_name, res in self.discovery["resources"].items():
            for m_name, m in res.get("methods", {}).items():
                out[(res_name, m_name)] = tuple(m.get("scopes", ()))
        return out

    @staticmethod
    def _token(prefix: str) -> str:
        return prefix + secrets.token_urlsafe(24)

    def _user(self, email: str) -> GoogleUser:
        user = self._users.get(email.lower())
        if user is None:
            raise KeyError(f"no emulated Google user {email!r}; call add_user() first")
        return user

    def _add_calendar_locked(self, user: GoogleUser, cal: str, summary: str | None = None) -> None:
        cal = "primary" if cal in ("primary", user.email) else cal
        if cal not in user.calendars:
            user.calendars[cal] = {"summary": summary or (user.email if cal == "primary" else cal)}
            self._cals.setdefault((user.email, cal), {})

    @staticmethod
    def _canonical_cal(user: GoogleUser, calendar_id: str) -> str:
        return "primary" if calendar_id in ("primary", user.email) else calendar_id

    def _store_for(self, owner: str, calendar_id: str) -> dict[str, _Stored]:
        user = self._user(owner)
        return self._cals.setdefault((user.email, self._canonical_cal(user, calendar_id)), {})

    def _new_grant(self, email: str, client_id: str | None, scopes: tuple[str, ...], refresh: str) -> str:
        grant = _Grant(email, client_id, scopes, refresh)
        self._grants.append(grant)
        self._refresh[refresh] = grant
        return refresh

    def _new_access(self, grant: _Grant, scopes: tuple[str, ...]) -> str:
        tok = self._token("ya29.emu-")
        self._access[tok] = _AccessToken(grant, scopes, self.clock() + self.token_lifetime)
        return tok

    def _revoke_grant(self, grant: _Grant) -> None:
        grant.revoked = True
        for tok, at in list(self._access.items()):
            if at.grant is grant:
                del self._access[tok]

    def _bearer(self, req: Request) -> _AccessToken | None:
        auth = req.headers.get("authorization", "")
        if not auth.lower().startswith("bearer "):
            return None
        at = self._access.get(auth[7:].strip())
        if at is None or at.grant.revoked or at.expires_at <= self.clock():
            return None
        return at

    def _next_rev(self) -> int:
        self._rev += 1
        return self._rev

    def _etag(self, rev: int) -> str:
        return f'"{3_000_000_000_000_000 + rev}"'

    def _touch(self, stored: _Stored) -> None:
        stored.rev = self._next_rev()
        stored.event["etag"] = self._etag(stored.rev)
        stored.event["updated"] = _now_rfc3339()

    def _new_event(self, user: GoogleUser, cal: str, body: dict[str, Any], event_id: str) -> dict[str, Any]:
        rev = self._next_rev()
        now = _now_rfc3339()
        cal_email = user.email if cal == "primary" else cal
        ev: dict[str, Any] = {
            "kind": "calendar#event", "etag": self._etag(rev), "id": event_id, "status": "confirmed",
            "htmlLink": f"{self.url}calendar/event?eid={event_id}", "created": now, "updated": now,
            "creator": {"email": user.email, "self": True},
            "organizer": {"email": cal_email, "self": True},
            "iCalUID": body.get("iCalUID") or f"{event_id}@google.com", "sequence": 0,
            "reminders": {"useDefault": True}, "eventType": "default",
        }
        for k, v in body.items():
            if k not in SERVER_OWNED and v is not None:
                ev[k] = v
        return ev

    # ---- routing ---------------------------------------------------------------------------

    def classify(self, req: Request) -> None:
        p = req.path
        if p.startswith(("/calendar/v3/", "/batch/")):
            req.kind = "api"
        elif p in ("/token", "/o/oauth2/token", "/oauth2/v4/token"):
            req.kind = "token"
        elif p in ("/o/oauth2/v2/auth", "/o/oauth2/auth"):
            req.kind = "consent"
        elif p.startswith("/oauth2/") and ("userinfo" in p or "tokeninfo" in p):
            req.kind = "userinfo"
        elif p in ("/revoke", "/o/oauth2/revoke"):
            req.kind = "revoke"
        else:
            req.kind = "api" if p.startswith(("/calendars", "/users/")) else "other"
        with self.lock:
            at = self._bearer(req)
            if at is not None:
                req.account = at.grant.email

    def route(self, req: Request) -> Response:
        try:
            if req.kind == "token":
                return self._token_endpoint(req)
            if req.kind == "consent":
                return self._consent(req)
            if req.kind == "userinfo":
                return self._userinfo(req)
            if req.kind == "revoke":
                return self._revoke_endpoint(req)
            if req.path.startswith("/calendar/v3/"):
                return self._api(req)
            if req.path.startswith("/batch/"):
                raise ApiError(501, "notImplemented", "The calsync Google emulator does not emulate batch requests.")
            raise ApiError(404, "notFound",
                           f"Not Found: {req.path}. The Calendar API lives under /calendar/v3/ — "
                           "client_options api_endpoint must include the service path "
                           "(GoogleEmulator.api_endpoint).")
        except ApiError as e:
            return Response.json(e.status, google_error_body(e.status, e.reason, e.message, e.domain, e.extra),
                                 e.headers)
        except OAuthError as e:
            return Response.json(e.status, {"error": e.error, "error_description": e.description})

    def error_response(self, req: Request, status: int, reason: str | None, message: str | None,
                       retry_after: float | str | None = None) -> Response:
        headers = {"Retry-After": _fmt_retry_after(retry_after)} if retry_after is not None else {}
        if req.kind == "token":
            error = reason or ("invalid_grant" if status == 400 else "internal_failure")
            return Response.json(status, {"error": error, "error_description": message or "Injected failure"}, headers)
        domain, default_reason, default_message = _STATUS_DEFAULTS.get(status, ("global", "error", "Error"))
        reason = reason or default_reason
        domain = _REASON_DOMAINS.get(reason, domain)
        body = google_error_body(status, reason, message or default_message, domain)
        if status == 401:
            headers.setdefault("WWW-Authenticate", 'Bearer realm="https://accounts.google.com/", error="invalid_token"')
        return Response.json(status, body, headers)

    # ---- Calendar API ----------------------------------------------------------------------

    def _api(self, req: Request) -> Response:
        seg = req.segments()[2:]  # drop "calendar", "v3"
        method = req.method
        resource, op, cal_id, event_id = self._match(seg, method)
        req.info.update(op=f"{resource}.{op}", calendar_id=cal_id, event_id=event_id)
        if method in ("POST", "PUT", "PATCH", "DELETE") and resource == "events":
            req.info["send_updates"] = req.param("sendUpdates")
            if req.param("sendNotifications") is not None:
                req.info["send_notifications"] = req.param("sendNotifications")
        with self.lock:
            at = self._bearer(req)
            if at is None:
                raise ApiError(401, "authError", "Invalid Credentials",
                               headers={"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/", '
                                                            'error="invalid_token"'},
                               extra={"location": "Authorization", "locationType": "header"})
            req.account = at.grant.email
            allowed = self._method_scopes.get((resource, op), ())
            if allowed and not set(allowed) & set(at.scopes):
                raise ApiError(403, "insufficientPermissions", "Insufficient Permission: Request had "
                               "insufficient authentication scopes.")
            self._admit(req.account)
            user = self._user(req.account)
            handler = getattr(self, f"_{resource}_{op}", None)
            if handler is None:
                raise ApiError(501, "notImplemented",
                               f"The calsync Google emulator does not implement {resource}.{op}.")
            return handler(req, user, cal_id, event_id)

    @staticmethod
    def _match(seg: list[str], method: str) -> tuple[str, str, str | None, str | None]:
        n = len(seg)
        if n >= 1 and seg[0] == "calendars":
            if n == 1:
                return "calendars", {"POST": "insert"}.get(method, "unknown"), None, None
            cal = seg[1]
            if n == 2:
                return "calendars", {"GET": "get", "PUT": "update", "PATCH": "patch",
                                     "DELETE": "delete"}.get(method, "unknown"), cal, None
            if seg[2] == "events":
                if n == 3:
                    return "events", {"GET": "list", "POST": "insert"}.get(method, "unknown"), cal, None
                if n == 4 and method == "POST" and seg[3] in ("import", "quickAdd", "watch"):
                    return "events", seg[3], cal, None
                if n == 4:
                    return "events", {"GET": "get", "PUT": "update", "PATCH": "patch",
                                      "DELETE": "delete"}.get(method, "unknown"), cal, seg[3]
                if n == 5:
                    return "events", seg[4], cal, seg[3]  # instances, move
            if n == 3 and seg[2] == "clear":
                return "calendars", "clear", cal, None
        if n >= 3 and seg[:3] == ["users", "me", "calendarList"]:
            if n == 3:
                return "calendarList", {"GET": "list", "POST": "insert"}.get(method, "unknown"), None, None
            return "calendarList", {"GET": "get"}.get(method, "unknown"), seg[3], None
        raise ApiError(404, "notFound", "Not Found")

    def _admit(self, account: str) -> None:
        now = self.clock()
        q = self._quota
        q.window = self.quota_window
        project, user = "project", f"user:{account}"
        over = None
        if q.would_exceed(project, self.quota_per_project_per_minute, now):
            over = (project, "rateLimitExceeded", "Rate Limit Exceeded")
        elif q.would_exceed(user, self.quota_per_user_per_minute, now):
            over = (user, "userRateLimitExceeded", "User Rate Limit Exceeded")
        if over is None:
            q.add(project, now)
            q.add(user, now)
            return
        key, reason, message = over
        headers = {}
        if self.quota_retry_after == "auto":
            headers["Retry-After"] = str(q.seconds_until_free(key, now))
        elif self.quota_retry_after is not None:
            headers["Retry-After"] = _fmt_retry_after(self.quota_retry_after)
        if self.quota_status == 429:
            raise ApiError(429, "rateLimitExceeded", "Rate Limit Exceeded", "usageLimits", headers)
        raise ApiError(403, reason, message, "usageLimits", headers)

    def _calendar(self, user: GoogleUser, cal_id: str | None) -> tuple[str, dict[str, _Stored]]:
        cal = self._canonical_cal(user, cal_id or "")
        if cal not in user.calendars:
            raise ApiError(404, "notFound", "Not Found")
        return cal, self._cals.setdefault((user.email, cal), {})

    def _body(self, req: Request) -> dict[str, Any]:
        try:
            body = req.json()
        except (ValueError, UnicodeDecodeError):
            raise ApiError(400, "parseError", "Parse Error") from None
        if body is None:
            body = {}
        if not isinstance(body, dict):
            raise ApiError(400, "parseError", "Parse Error")
        self._validator.validate(body, "Event")
        req.info["has_attendees"] = bool(body.get("attendees"))
        return body

    def _check_send_updates(self, req: Request) -> None:
        su = req.param("sendUpdates")
        if su is not None and su not in SEND_UPDATES:
            raise ApiError(400, "invalidParameter", f"Invalid value for sendUpdates: {su}")

    def _check_times(self, ev: dict[str, Any], tz_default: str) -> None:
        instants = {}
        kinds = {}
        for key in ("start", "end"):
            edt = ev.get(key)
            if not isinstance(edt, dict) or not (edt.get("dateTime") or edt.get("date")):
                raise ApiError(400, "required", f"Missing {key} time.")
            tzname = edt.get("timeZone")
            if tzname and _zone(tzname) is None:
                raise ApiError(400, "invalid", f"Invalid time zone definition for {key} time.")
            if edt.get("dateTime") and edt.get("date"):
                raise ApiError(400, "invalid", f"Invalid {key} time.")
            try:
                if edt.get("dateTime"):
                    kinds[key] = "dateTime"
                    dt = _fromiso(edt["dateTime"])
                    if dt.tzinfo is None:
                        if not tzname:
                            raise ApiError(400, "required", f"Missing time zone definition for {key} time.")
                        dt = dt.replace(tzinfo=_zone(tzname))
                else:
                    kinds[key] = "date"
                    d = date.fromisoformat(edt["date"])
                    dt = datetime.combine(d, dtime(0), _zone(tzname or tz_default) or UTC)
            except (ValueError, TypeError, AttributeError):
                raise ApiError(400, "invalid", f"Invalid {key} time.") from None
            instants[key] = dt
        if kinds["start"] != kinds["end"]:
            raise ApiError(400, "invalid", "Invalid start or end time: both must be dates or both dateTimes.")
        if instants["end"] < instants["start"]:
            raise ApiError(400, "timeRangeEmpty", "The specified time range is empty.", "calendar")

    def _check_if_match(self, req: Request, stored: _Stored) -> None:
        want = req.headers.get("if-match")
        if want and want != "*" and want != stored.event.get("etag"):
            raise ApiError(412, "conditionNotMet", "Precondition Failed")

    # events.insert
    def _events_insert(self, req: Request, user: GoogleUser, cal_id: str, _eid: None) -> Response:
        self._check_send_updates(req)
        cal, store = self._calendar(user, cal_id)
        body = self._body(req)
        event_id = body.get("id")
        req.info["event_id"] = event_id
        if event_id is not None and not EVENT_ID_RE.fullmatch(str(event_id)):
            raise ApiError(400, "invalid", "Invalid resource id value.")
        if event_id is not None and event_id in store:
            raise ApiError(409, "duplicate", "The requested identifier already exists.")
        ical = body.get("iCalUID")
        if ical and any(s.event.get("iCalUID") == ical for s in store.values()):
            raise ApiError(409, "duplicate", "The requested identifier already exists.")
        self._check_times(body, user.time_zone)
        ev = self._new_event(user, cal, body, event_id or _b32hex_id())
        store[ev["id"]] = _Stored(ev, self._rev)
        req.info["event_id"] = ev["id"]
        return Response.json(200, copy.deepcopy(ev))

    def _existing(self, store: dict[str, _Stored], event_id: str) -> _Stored:
        stored = store.get(event_id)
        if stored is None:
            raise ApiError(404, "notFound", "Not Found")
        return stored

    # events.get
    def _events_get(self, req: Request, user: GoogleUser, cal_id: str, event_id: str) -> Response:
        _, store = self._calendar(user, cal_id)
        return Response.json(200, copy.deepcopy(self._existing(store, event_id).event))

    def _writable(self, req: Request, stored: _Stored) -> None:
        if stored.event.get("status") == "cancelled" and not self.revive_cancelled:
            raise ApiError(403, "forbidden", "Forbidden")
        self._check_if_match(req, stored)

    # events.update (PUT: full replace of the client-writable fields)
    def _events_update(self, req: Request, user: GoogleUser, cal_id: str, event_id: str) -> Response:
        self._check_send_updates(req)
        _, store = self._calendar(user, cal_id)
        body = self._body(req)
        stored = self._existing(store, event_id)
        self._writable(req, stored)
        self._check_times(body, user.time_zone)
        old = stored.event
        ev = {k: old[k] for k in SERVER_OWNED if k in old}
        ev.update({"status": "confirmed", "sequence": old.get("sequence", 0),
                   "reminders": {"useDefault": True}, "eventType": old.get("eventType", "default")})
        for k, v in body.items():
            if k not in SERVER_OWNED and v is not None:
                ev[k] = v
        stored.event = ev
        self._touch(stored)
        return Response.json(200, copy.deepcopy(ev))

    # events.patch
    def _events_patch(self, req: Request, user: GoogleUser, cal_id: str, event_id: str) -> Response:
        self._check_send_updates(req)
        _, store = self._calendar(user, cal_id)
        body = self._body(req)
        stored = self._existing(store, event_id)
        self._writable(req, stored)
        merged = copy.deepcopy(stored.event)
        was_cancelled = merged.get("status") == "cancelled"
        _merge_patch(merged, {k: v for k, v in body.items() if k not in SERVER_OWNED})
        if was_cancelled and "status" not in body:
            merged["status"] = "confirmed"  # only reachable with revive_cancelled=True
        self._check_times(merged, user.time_zone)
        stored.event = merged
        self._touch(stored)
        return Response.json(200, copy.deepcopy(merged))

    # events.delete
    def _events_delete(self, req: Request, user: GoogleUser, cal_id: str, event_id: str) -> Response:
        self._check_send_updates(req)
        _, store = self._calendar(user, cal_id)
        stored = self._existing(store, event_id)
        if stored.event.get("status") == "cancelled":
            raise ApiError(410, "deleted", "Resource has been deleted")
        self._check_if_match(req, stored)
        stored.event["status"] = "cancelled"
        self._touch(stored)
        return Response.empty(204)

    # events.list
    def _events_list(self, req: Request, user: GoogleUser, cal_id: str, _eid: None) -> Response:
        cal, store = self._calendar(user, cal_id)
        sync_token = req.param("syncToken")
        show_deleted = _bool_param(req, "showDeleted", False)
        if sync_token is not None:
            forbidden = [p for p in ("iCalUID", "orderBy", "privateExtendedProperty", "q", "sharedExtendedProperty",
                                     "timeMin", "timeMax", "updatedMin") if p in req.query]
            if forbidden:
                raise ApiError(400, "invalid", f"{forbidden[0]} cannot be used together with syncToken.")
            if req.param("showDeleted") == "false":
                raise ApiError(400, "invalid", "showDeleted=false cannot be used together with syncToken.")
            try:
                since = int(base64.urlsafe_b64decode(sync_token.encode()).decode().removeprefix("rev:"))
            except ValueError:
                raise ApiError(400, "invalid", "Invalid sync token value.") from None
            if since < self._min_sync_rev:
                raise ApiError(410, "fullSyncRequired", "Sync token is no longer valid, a full sync is required.")
        max_results = _int_param(req, "maxResults", MAX_RESULTS_DEFAULT, 1)
        max_results = min(max_results, MAX_RESULTS_CAP)
        time_min = _time_param(req, "timeMin")
        time_max = _time_param(req, "timeMax")
        if time_min and time_max and time_max <= time_min:
            raise ApiError(400, "timeRangeEmpty", "The specified time range is empty.", "calendar")
        updated_min = _time_param(req, "updatedMin")
        order_by = req.param("orderBy")
        if order_by not in (None, "startTime", "updated"):
            raise ApiError(400, "invalidParameter", f"Invalid value for orderBy: {order_by}")
        if order_by == "startTime" and not _bool_param(req, "singleEvents", False):
            raise ApiError(400, "badRequest", "The requested ordering is not available for the particular query.")
        priv = [_split_prop(c) for c in req.params("privateExtendedProperty")]
        shared = [_split_prop(c) for c in req.params("sharedExtendedProperty")]
        ical = req.param("iCalUID")
        q = (req.param("q") or "").lower()

        rows = []
        for s in store.values():
            ev = s.event
            cancelled = ev.get("status") == "cancelled"
            if sync_token is not None:
                if s.rev <= since:
                    continue
            elif cancelled and not show_deleted and not (updated_min is not None):
                continue
            if updated_min is not None and _parse_rfc3339(ev["updated"]) < updated_min:
                continue
            if ical is not None and ev.get("iCalUID") != ical:
                continue
            if priv and not self._props_match(ev, "private", priv):
                continue
            if shared and not self._props_match(ev, "shared", shared):
                continue
            if time_min or time_max:
                start, end = _event_span(ev, user.time_zone)
                if time_min and end is not None and end <= time_min:
                    continue
                if time_max and start is not None and start >= time_max:
                    continue
            if q and not any(q in str(ev.get(f, "")).lower() for f in ("summary", "description", "location")):
                continue
            rows.append(s)
        if order_by == "updated":
            rows.sort(key=lambda s: s.event.get("updated", ""))
        elif order_by == "startTime":
            rows.sort(key=lambda s: _event_span(s.event, user.time_zone)[0] or datetime.min.replace(tzinfo=UTC))

        offset = 0
        token = req.param("pageToken")
        if token:
            try:
                offset = int(base64.urlsafe_b64decode(token.encode()).decode().removeprefix("off:"))
            except ValueError:
                raise ApiError(400, "invalid", "Invalid page token value.") from None
        page = rows[offset:offset + max_results]
        out: dict[str, Any] = {
            "kind": "calendar#events", "etag": self._etag(self._rev), "summary": user.calendars[cal]["summary"],
            "description": "", "updated": _now_rfc3339(), "timeZone": user.time_zone, "accessRole": "owner",
            "defaultReminders": [{"method": "popup", "minutes": 10}] if cal == "primary" else [],
            "items": [copy.deepcopy(s.event) for s in page],
        }
        if offset + max_results < len(rows):
            out["nextPageToken"] = base64.urlsafe_b64encode(f"off:{offset + max_results}".encode()).decode()
        else:
            out["nextSyncToken"] = base64.urlsafe_b64encode(f"rev:{self._rev}".encode()).decode()
        req.info["items"] = len(page)
        return Response.json(200, out)

    def _props_match(self, ev: dict[str, Any], kind: str, constraints: list[tuple[str, str]]) -> bool:
        props = (ev.get("extendedProperties") or {}).get(kind) or {}
        hits = [props.get(name) == value for name, value in constraints]
        return any(hits) if self.extended_property_match == "any" else all(hits)

    # calendars.get, calendarList
    def _calendar_resource(self, user: GoogleUser, cal: str) -> dict[str, Any]:
        cal_id = user.email if cal == "primary" else cal
        return {"kind": "calendar#calendar", "etag": self._etag(0), "id": cal_id,
                "summary": user.calendars[cal]["summary"], "timeZone": user.time_zone}

    def _calendars_get(self, req: Request, user: GoogleUser, cal_id: str, _eid: None) -> Response:
        cal, _ = self._calendar(user, cal_id)
        return Response.json(200, self._calendar_resource(user, cal))

    def _list_entry(self, user: GoogleUser, cal: str) -> dict[str, Any]:
        entry = self._calendar_resource(user, cal)
        entry.update(kind="calendar#calendarListEntry", accessRole="owner", primary=cal == "primary",
                     defaultReminders=[])
        if cal != "primary":
            entry.pop("primary")
        return entry

    def _calendarList_list(self, req: Request, user: GoogleUser, _c: None, _e: None) -> Response:
        items = [self._list_entry(user, cal) for cal in user.calendars]
        return Response.json(200, {"kind": "calendar#calendarList", "etag": self._etag(0), "items": items,
                                   "nextSyncToken": "emu"})

    def _calendarList_get(self, req: Request, user: GoogleUser, cal_id: str, _e: None) -> Response:
        cal, _ = self._calendar(user, cal_id)
        return Response.json(200, self._list_entry(user, cal))

    # ---- OAuth -----------------------------------------------------------------------------

    def _check_client(self, client_id: str | None, secret: str | None, *, need_secret: bool) -> None:
        if not self.clients:
            return
        client = self.clients.get(client_id or "")
        if client is None:
            raise OAuthError(401, "invalid_client", "The OAuth client was not found.")
        if need_secret and client.get("secret") is not None and client["secret"] != secret:
            raise OAuthError(401, "invalid_client", "Unauthorized")

    def _token_endpoint(self, req: Request) -> Response:
        if req.method != "POST":
            raise OAuthError(405, "invalid_request", "Method not allowed; POST the form.")
        form = req.form()
        grant_type = form.get("grant_type")
        client_id, secret = form.get("client_id"), form.get("client_secret")
        basic = req.headers.get("authorization", "")
        if basic.lower().startswith("basic "):
            try:
                client_id, _, secret = base64.b64decode(basic[6:]).decode().partition(":")
            except ValueError:
                raise OAuthError(401, "invalid_client", "Unauthorized") from None
        req.info["grant_type"] = grant_type
        with self.lock:
            self._check_client(client_id, secret, need_secret=True)
            if grant_type == "refresh_token":
                return self._refresh_grant(req, form, client_id)
            if grant_type == "authorization_code":
                return self._code_grant(req, form, client_id)
        if not grant_type:
            raise OAuthError(400, "invalid_request", "Missing required parameter: grant_type")
        raise OAuthError(400, "unsupported_grant_type", f"Invalid grant_type: {grant_type}")

    def _refresh_grant(self, req: Request, form: dict[str, str], client_id: str | None) -> Response:
        token = form.get("refresh_token")
        if not token:
            raise OAuthError(400, "invalid_request", "Missing required parameter: refresh_token")
        grant = self._refresh.get(token)
        if grant is None or grant.revoked:
            raise OAuthError(400, "invalid_grant", "Token has been expired or revoked.")
        req.account = grant.email
        if grant.client_id is not None and client_id != grant.client_id:
            raise OAuthError(401, "unauthorized_client", "Unauthorized")
        wanted = _norm_scopes(form.get("scope"))
        if wanted and not set(wanted) <= set(grant.scopes):
            raise OAuthError(400, "invalid_scope", "Bad Request")
        scopes = wanted or grant.scopes
        access = self._new_access(grant, scopes)
        return Response.json(200, {"access_token": access, "expires_in": self.token_lifetime,
                                   "scope": " ".join(scopes), "token_type": "Bearer"},
                             {"Cache-Control": "no-cache, no-store, max-age=0, must-revalidate"})

    def _code_grant(self, req: Request, form: dict[str, str], client_id: str | None) -> Response:
        code = self._codes.get(form.get("code") or "")
        if code is None:
            raise OAuthError(400, "invalid_grant", "Malformed auth code.")
        req.account = code.email
        if code.used or code.expires_at <= self.clock():
            raise OAuthError(400, "invalid_grant", "Bad Request")
        if client_id != code.client_id:
            raise OAuthError(401, "unauthorized_client", "Unauthorized")
        if form.get("redirect_uri") != code.redirect_uri:
            raise OAuthError(400, "redirect_uri_mismatch", "Bad Request")
        if code.challenge is not None:
            verifier = form.get("code_verifier")
            if not verifier:
                raise OAuthError(400, "invalid_grant", "Missing code verifier.")
            if not pkce_matches(verifier, code.challenge, code.challenge_method):
                raise OAuthError(400, "invalid_grant", "Invalid code verifier.")
        code.used = True
        live = [g for g in self._grants if g.email == code.email and g.client_id == code.client_id
                and not g.revoked and g.refresh_token is not None]
        give_refresh = code.offline and (not live or code.force_consent or self.reissue_refresh_token)
        refresh = self._token("1//emu-") if give_refresh else None
        grant = _Grant(code.email, code.client_id, code.scopes, refresh)
        self._grants.append(grant)
        if refresh:
            self._refresh[refresh] = grant
        out = {"access_token": self._new_access(grant, code.scopes), "expires_in": self.token_lifetime,
               "scope": " ".join(code.scopes), "token_type": "Bearer"}
        if refresh:
            out["refresh_token"] = refresh
        return Response.json(200, out)

    def _consent(self, req: Request) -> Response:
        p = {k: req.param(k) for k in ("client_id", "redirect_uri", "response_type", "scope", "state",
                                       "code_challenge", "code_challenge_method", "login_hint",
                                       "access_type", "prompt")}
        for name in ("client_id", "redirect_uri", "response_type", "scope"):
            if not p[name]:
                return _oauth_page(400, "invalid_request", f"Missing required parameter: {name}")
        with self.lock:
            if self.clients:
                client = self.clients.get(p["client_id"])
                if client is None:
                    return _oauth_page(401, "invalid_client", "The OAuth client was not found.")
                uris = client.get("redirect_uris")
                if uris is not None and p["redirect_uri"] not in uris:
                    return _oauth_page(400, "redirect_uri_mismatch", "redirect_uri not registered for this client")
            redirect = p["redirect_uri"]

            def back(**params: str | None) -> Response:
                params = {k: v for k, v in params.items() if v is not None}
                sep = "&" if urlsplit(redirect).query else "?"
                return Response.redirect(redirect + sep + urlencode(params))

            if p["response_type"] != "code":
                return back(error="unsupported_response_type", state=p["state"])
            method = p["code_challenge_method"] or "plain"
            if p["code_challenge"] and method not in ("S256", "plain"):
                return _oauth_page(400, "invalid_request", "Invalid code_challenge_method")
            email = (p["login_hint"] or self.consent_user or next(iter(self._users), None) or "").lower()
            if not email:
                return _oauth_page(400, "invalid_request", "No emulated Google user; call add_user() first.")
            if email not in self._users:
                if not self.auto_add_users:
                    return _oauth_page(400, "invalid_request", f"No emulated Google user {email}; call add_user().")
                user = self._users[email] = GoogleUser(email=email)
                self._add_calendar_locked(user, "primary")
            req.account = email
            if self.consent_decision != "allow":
                return back(error="access_denied", state=p["state"])
            scopes = _norm_scopes(p["scope"])
            code = self._token("4/0emu-")
            self._codes[code] = _AuthCode(
                email=email, client_id=p["client_id"], redirect_uri=redirect, scopes=scopes,
                challenge=p["code_challenge"], challenge_method=method,
                offline=p["access_type"] == "offline", force_consent="consent" in (p["prompt"] or "").split(),
                expires_at=self.clock() + 600,
            )
            return back(state=p["state"], code=code, scope=" ".join(scopes))

    def _userinfo(self, req: Request) -> Response:
        with self.lock:
            at = self._bearer(req)
            if at is None and "tokeninfo" in req.path:
                token = req.param("access_token") or req.form().get("access_token") or ""
                found = self._access.get(token)
                at = found if found and not found.grant.revoked and found.expires_at > self.clock() else None
            if at is None:
                if "tokeninfo" in req.path:
                    raise OAuthError(400, "invalid_token", "Invalid Value")
                raise OAuthError(401, "invalid_request", "Invalid Credentials")
            email = at.grant.email
            sub = str(int(hashlib.sha256(email.encode()).hexdigest()[:15], 16))
            has_email = EMAIL_SCOPE in at.scopes
            if "tokeninfo" in req.path:
                out: dict[str, Any] = {"azp": at.grant.client_id or "", "aud": at.grant.client_id or "",
                                       "sub": sub, "scope": " ".join(at.scopes),
                                       "expires_in": str(int(at.expires_at - self.clock()))}
                if has_email:
                    out.update(email=email, email_verified="true")
            elif "/v3/" in req.path:
                out = {"sub": sub}
                if has_email:
                    out.update(email=email, email_verified=True)
            else:
                out = {"id": sub}
                if has_email:
                    out.update(email=email, verified_email=True)
            return Response.json(200, out)

    def _revoke_endpoint(self, req: Request) -> Response:
        token = req.param("token") or req.form().get("token")
        if token and self.revoke(token):
            return Response.json(200, {})
        raise OAuthError(400, "invalid_token", "Token expired or revoked")


# ---- small helpers ---------------------------------------------------------------------------


def _merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> None:
    """Google patch semantics: objects merge recursively, arrays and scalars replace, null clears."""
    for k, v in patch.items():
        if v is None:
            target.pop(k, None)
        elif isinstance(v, dict) and isinstance(target.get(k), dict):
            _merge_patch(target[k], v)
        else:
            target[k] = v


def _bool_param(req: Request, name: str, default: bool) -> bool:
    v = req.param(name)
    if v is None:
        return default
    if v.lower() in ("true", "1"):
        return True
    if v.lower() in ("false", "0"):
        return False
    raise ApiError(400, "invalidParameter", f"Invalid boolean value for {name}: {v}")


def _int_param(req: Request, name: str, default: int, minimum: int) -> int:
    v = req.param(name)
    if v is None:
        return default
    try:
        n = int(v)
    except ValueError:
        raise ApiError(400, "invalidParameter", f"Invalid value for {name}: {v}") from None
    if n < minimum:
        raise ApiError(400, "invalid", f"Invalid value for {name}: {v}")
    return n


def _time_param(req: Request, name: str) -> datetime | None:
    v = req.param(name)
    if v is None:
        return None
    try:
        return _parse_rfc3339(v)
    except (ValueError, IndexError):
        raise ApiError(400, "badRequest", "Bad Request") from None


def _split_prop(constraint: str) -> tuple[str, str]:
    name, sep, value = constraint.partition("=")
    if not sep or not name:
        raise ApiError(400, "invalid", f"Invalid extended property constraint: {constraint}")
    return name, value


def _event_span(ev: dict[str, Any], tz_default: str) -> tuple[datetime | None, datetime | None]:
    out = []
    for key in ("start", "end"):
        edt = ev.get(key) or {}
        try:
            if edt.get("dateTime"):
                dt = _fromiso(edt["dateTime"])
                if dt.tzinfo is None:
                    dt = dt.replace(tzinfo=_zone(edt.get("timeZone") or tz_default) or UTC)
            elif edt.get("date"):
                dt = datetime.combine(date.fromisoformat(edt["date"]), dtime(0),
                                      _zone(edt.get("timeZone") or tz_default) or UTC)
            else:
                dt = None
        except ValueError:
            dt = None
        out.append(dt)
    return out[0], out[1]


def _oauth_page(status: int, error: str, description: str) -> Response:
    html = (f"<!doctype html><title>Error {status}: {error}</title>"
            f"<h1>Error {status}: {error}</h1><p>{description}</p>")
    return Response.text(status, html)
