"""A local Google Calendar v3 emulator that the real google-api-python-client talks to.

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
``client_options.api_endpoint`` REPLACES the whole base URL (``rootUrl + servicePath``), so the
endpoint must carry the service path: ``http://127.0.0.1:PORT/calendar/v3/``. Passing the bare
root (``emu.url``) sends requests to ``/calendars/primary/events``, which this emulator answers
404 exactly as Google would: a configuration that works here works against Google. Batch is not
emulated (``/batch/calendar/v3`` answers 501).

Python API (all thread-safe; configuration attributes may change at any time):

- lifecycle: ``GoogleEmulator(start=True, port=0, clock=None, revive_cancelled=False)``, context
  manager, ``.stop()``; ``.url`` (root, trailing slash), ``.api_endpoint``, ``.token_url``,
  ``.auth_url``, ``.userinfo_url``, ``.revoke_url``.
- accounts: ``.add_user(email, refresh_token=None, calendars=("primary",), scopes=..., time_zone=)``
  → refresh token; ``.users``; ``.add_calendar``/``.remove_calendar``; the OAuth side
  (``.issue_refresh_token``, ``.access_token_for``, ``.revoke``, ``.revoke_user``,
  ``.expire_access_tokens``, ``.add_client``, ``.consent_decision``, ``.consent_user``) is in
  :mod:`.identity` and :mod:`..oauth`.
- calendars: ``.events(owner, calendar_id="primary")`` (live), ``.all_events(...)`` (with
  cancelled), ``.event(owner, id)``; as the user in the UI: ``.put_event`` (a foreign event),
  ``.modify_event`` (drift), ``.cancel_event``, ``.purge_event``.
- faults and inspection: see :class:`..server.EmulatorServer` (``.fail_next``,
  ``.lose_next_response``, ``.timeout_next``, ``.latency``, ``.request_log`` with info keys op,
  calendar_id, event_id, send_updates, has_attendees; ``.count(...)``, ``.internal_errors``).
  Quotas: ``.quota_per_user_per_minute`` (600), ``.quota_per_project_per_minute`` (10 000),
  ``.quota_window``, ``.quota_status`` (403|429), ``.quota_retry_after`` (None|seconds|"auto");
  ``.clock`` (e.g. ``FakeClock``) drives quota windows and token/code expiry.

Endpoints (paths as in the shipped discovery document ``calendar.v3.json``):
``{api_endpoint}calendars/{calendarId}/events``: insert (POST), list (GET);
``.../events/{eventId}``: get, update (PUT), patch, delete; ``calendars/{calendarId}``: get;
``users/me/calendarList[/{calendarId}]``: list/get. Other methods answer 501 ``notImplemented``.

Behaviour worth knowing (each mirrors Google's Calendar API reference; bodies: :mod:`.schema`):

- Client-chosen ids: base32hex ``[a-v0-9]{5,1024}`` else 400 ``invalid``; a second insert of an
  id (or iCalUID) that exists in the calendar — including a cancelled one — is 409 ``duplicate``.
- Delete marks the event cancelled (204); deleting it again is 410 ``deleted``; unknown id 404
  ``notFound``. ``get`` still returns cancelled events.
- Updating/patching a cancelled event is the unsettled case (one report says update revives it,
  another got 403). Default ``revive_cancelled=False``: 403 ``forbidden``, so callers must take
  their fallback (a fresh id). ``revive_cancelled=True``: update/patch succeed and the event
  becomes ``confirmed`` unless the body sets ``status``.
- ``privateExtendedProperty``/``sharedExtendedProperty`` repeated: events must match ALL
  constraints (the discovery doc; Google's guide says ORed — filter with one constraint).
- Every write records ``has_attendees`` and ``send_updates`` in the request log so tests can
  assert ``count(has_attendees=True) == 0`` and ``send_updates == "none"``.
- Auth: every API call needs a live Bearer token from the token endpoint, else 401
  ``authError``; a token whose scopes grant none of the method's scopes (from the discovery doc)
  gets 403 ``insufficientPermissions`` (so ``calendar.events.owned`` alone cannot
  ``calendars.get``).
- Quotas: sliding window of ``quota_window`` (60 s) on ``clock``, per user and per project. Only
  admitted requests count. Over the project quota → 403 ``rateLimitExceeded``; over the user
  quota → 403 ``userRateLimitExceeded`` (domain ``usageLimits``); ``quota_status = 429`` answers
  429 ``rateLimitExceeded`` for both. ``Retry-After`` only when ``quota_retry_after`` is set.
  Injected faults neither consume nor check quota.
- ``lose_next_response``: httplib2 re-sends a request once when the server closes the connection
  cleanly (``reset=False``), so the default closes with RST (``ConnectionResetError``).
"""

from __future__ import annotations

import base64
import copy
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..oauth import OAuthError
from ..server import Request, Response, SlidingWindow, format_retry_after
from .identity import DEFAULT_SCOPES, GoogleIdentity
from .schema import (
    EVENT_ID_RE,
    REASON_DOMAINS,
    SEND_UPDATES,
    SERVER_OWNED,
    STATUS_DEFAULTS,
    ApiError,
    SchemaValidator,
    bool_param,
    check_times,
    event_span,
    google_error_body,
    int_param,
    load_discovery,
    now_rfc3339,
    parse_rfc3339,
    split_prop,
    time_param,
)

__all__ = ["GoogleEmulator", "GoogleUser"]

MAX_RESULTS_DEFAULT, MAX_RESULTS_CAP = 250, 2500


# ---- state -----------------------------------------------------------------------------------


@dataclass
class GoogleUser:
    """A Google account and its calendars."""

    email: str
    calendars: dict[str, dict[str, Any]] = field(default_factory=dict)  # "primary" or id -> metadata
    time_zone: str = "UTC"


@dataclass
class _Stored:
    """An event as Google holds it, with the change counter that sync tokens and etags read."""

    event: dict[str, Any]
    rev: int


class GoogleEmulator(GoogleIdentity):
    """Google Calendar v3 + OAuth on 127.0.0.1. See the module docstring for behaviour."""

    default_fault_kinds = frozenset({"api"})

    def __init__(self, start: bool = True, *, host: str = "127.0.0.1", port: int = 0,
                 clock: Callable[[], float] | None = None, revive_cancelled: bool = False) -> None:
        discovery = load_discovery()
        self._validator = SchemaValidator(discovery)
        self._method_scopes = _method_scopes(discovery)
        # configuration (plain attributes; change them at any time)
        self.revive_cancelled = revive_cancelled
        self.quota_per_user_per_minute: int | None = 600
        self.quota_per_project_per_minute: int | None = 10_000
        self.quota_window: float = 60.0
        self.quota_status: int = 403
        self.quota_retry_after: float | str | None = None
        # state (users, grants and tokens: see GoogleIdentity)
        self._cals: dict[tuple[str, str], dict[str, _Stored]] = {}
        self._rev = 0
        self._quota = SlidingWindow(self.quota_window)
        super().__init__(host=host, port=port, start=start, clock=clock)

    # ---- URLs ------------------------------------------------------------------------------

    @property
    def api_endpoint(self) -> str:
        """What ``client_options={"api_endpoint": ...}`` needs: root + ``calendar/v3/``."""
        return self.url + "calendar/v3/"

    # ---- users and calendars ------------------------------------------------------------

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
            scopes_t = self.normalize_scopes(scopes) if isinstance(scopes, str) else tuple(scopes)
            return self._new_refresh(self._new_grant(email, None, scopes_t), refresh_token)

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

    # ---- internals: helpers ----------------------------------------------------------------

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

    def _next_rev(self) -> int:
        self._rev += 1
        return self._rev

    def _etag(self, rev: int) -> str:
        return f'"{3_000_000_000_000_000 + rev}"'

    def _touch(self, stored: _Stored) -> None:
        stored.rev = self._next_rev()
        stored.event["etag"] = self._etag(stored.rev)
        stored.event["updated"] = now_rfc3339()

    def _new_event(self, user: GoogleUser, cal: str, body: dict[str, Any], event_id: str) -> dict[str, Any]:
        rev = self._next_rev()
        now = now_rfc3339()
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
                req.account = at.email

    def route(self, req: Request) -> Response:
        try:
            if req.kind == "token":
                return self._token_endpoint(req)
            if req.kind == "consent":
                return self._authorize(req)
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
            return self.oauth_response(e, req)

    def error_response(self, req: Request, status: int, reason: str | None, message: str | None,
                       retry_after: float | str | None = None) -> Response:
        headers = {"Retry-After": format_retry_after(retry_after)} if retry_after is not None else {}
        if req.kind == "token":
            error = reason or ("invalid_grant" if status == 400 else "internal_failure")
            return Response.json(status, {"error": error, "error_description": message or "Injected failure"}, headers)
        domain, default_reason, default_message = STATUS_DEFAULTS.get(status, ("global", "error", "Error"))
        reason = reason or default_reason
        domain = REASON_DOMAINS.get(reason, domain)
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
            req.account = at.email
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
            headers["Retry-After"] = format_retry_after(self.quota_retry_after)
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
        check_times(body, user.time_zone)
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
        check_times(body, user.time_zone)
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
        check_times(merged, user.time_zone)
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
        show_deleted = bool_param(req, "showDeleted", False)
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
        max_results = int_param(req, "maxResults", MAX_RESULTS_DEFAULT, 1)
        max_results = min(max_results, MAX_RESULTS_CAP)
        time_min = time_param(req, "timeMin")
        time_max = time_param(req, "timeMax")
        if time_min and time_max and time_max <= time_min:
            raise ApiError(400, "timeRangeEmpty", "The specified time range is empty.", "calendar")
        updated_min = time_param(req, "updatedMin")
        order_by = req.param("orderBy")
        if order_by not in (None, "startTime", "updated"):
            raise ApiError(400, "invalidParameter", f"Invalid value for orderBy: {order_by}")
        if order_by == "startTime" and not bool_param(req, "singleEvents", False):
            raise ApiError(400, "badRequest", "The requested ordering is not available for the particular query.")
        priv = [split_prop(c) for c in req.params("privateExtendedProperty")]
        shared = [split_prop(c) for c in req.params("sharedExtendedProperty")]
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
            if updated_min is not None and parse_rfc3339(ev["updated"]) < updated_min:
                continue
            if ical is not None and ev.get("iCalUID") != ical:
                continue
            if priv and not self._props_match(ev, "private", priv):
                continue
            if shared and not self._props_match(ev, "shared", shared):
                continue
            if time_min or time_max:
                start, end = event_span(ev, user.time_zone)
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
            rows.sort(key=lambda s: event_span(s.event, user.time_zone)[0] or datetime.min.replace(tzinfo=UTC))

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
            "description": "", "updated": now_rfc3339(), "timeZone": user.time_zone, "accessRole": "owner",
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
        return all(hits)

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


def _b32hex_id() -> str:
    """An event id of the alphabet Google uses for the ids it makes up (base32hex, lower case)."""
    return base64.b32hexencode(uuid.uuid4().bytes).decode().rstrip("=").lower()


def _method_scopes(discovery: dict[str, Any]) -> dict[tuple[str, str], tuple[str, ...]]:
    """(resource, method) -> the scopes any of which lets a token call it (from the discovery doc)."""
    return {(res_name, m_name): tuple(m.get("scopes", ()))
            for res_name, res in discovery["resources"].items()
            for m_name, m in res.get("methods", {}).items()}
