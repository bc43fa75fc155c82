"""A local Microsoft Graph calendar emulator (on the identity platform of :mod:`.identity`) for msal and requests.

Microsoft cannot be reached from the test machines, so tests, benchmarks and ``calsync demo`` run
the real ``msal`` and ``requests`` against this HTTPS server on 127.0.0.1::

    emu = GraphEmulator()                          # starts at once; or `with GraphEmulator() as emu:`
    refresh = emu.add_user("mentee@contoso.com")   # a refresh token, as if the user had consented
    http = emu.session()                           # trusts emu.ca_file (see MicrosoftIdentity.session)
    app = msal.ConfidentialClientApplication(
        "client-id", client_credential="secret", authority=emu.authority,   # == f"{emu.authority_url}/common"
        http_client=http, instance_discovery=False)
    result = app.acquire_token_by_refresh_token(refresh, scopes=["Calendars.ReadWrite"])
    http.post(f"{emu.graph_url}/me/events", json={...},
              headers={"Authorization": "Bearer " + result["access_token"]})

Python API (thread-safe; configuration attributes may change at any time):

- lifecycle: ``GraphEmulator(start=True, port=0, clock=None, tenant="common",
  dedupe_transaction_ids=True)``, context manager, ``.stop()``; ``.authority_url``, ``.tenant``,
  ``.tenant_id``, ``.tenant_domain``, ``.authority``, ``.graph_url``, ``.ca_file``, ``.session()``,
  ``.token_url``, ``.auth_url``, ``.openid_configuration_url``; accounts and token death in
  :mod:`.identity`, mailbox limits in :mod:`.throttling`, faults and the request log in
  :mod:`..server` (info keys op, mailbox, app_id, event_id, calendar_id, transaction_id,
  deduplicated, has_attendees, immutable_id, throttled, grant_type, pkce, batch_id).
- mailboxes: ``.add_user(email, licensed=True, display_name=, scopes=, refresh_token=, client_id=)``
  → refresh token; ``.set_licensed``; ``.add_calendar(email, name)`` → id; ``.user(email)``/``.users``;
  ``.events(email, calendar_id=None)`` (live events, each with its
  ``singleValueExtendedProperties``), ``.event(email, id)``; as the person in Outlook:
  ``.delete_event``, ``.modify_event(email, id, changes)``, ``.put_event``; ``.make_event_id()``.

Graph endpoints (under ``/v1.0``; ``{owner}`` = ``me`` | ``users/{id | userPrincipalName}``):

- ``{owner}/events``, ``{owner}/calendar/events``, ``{owner}/calendars/{id}/events``: POST creates
  (201), GET lists (default page 10, ``$top`` ≤ 1000, ``Prefer: odata.maxpagesize``, ``$skip``
  paging through ``@odata.nextLink``, ``$select``, ``$orderby``, ``$filter`` and ``$expand`` on
  one single-value extended property).
- ``.../events/{id}``: GET, PATCH (top-level properties replace, extended properties upsert,
  ``If-Match`` checked), DELETE (204). Unknown id → 404 ``ErrorItemNotFound``; an id that is not
  an Outlook id (e.g. a Google id) → 400 ``ErrorInvalidIdMalformed``.
- ``{owner}``, ``{owner}/calendar``, ``{owner}/calendars[/{id}]``: GET. ``/$batch``: see
  :mod:`.batch`. Other paths answer 400 ``BadRequest`` "Resource not found for the segment ...".

Behaviour worth knowing (as Microsoft's Graph reference documents it; wording it does not
document follows what Graph is publicly reported to answer — match on status and code):

- ``transactionId`` ("for the server to avoid redundant POST operations in case of client
  retries"; what a repeat returns is undocumented, one observed account says "201, but no new
  event is created"): a POST whose ``transactionId`` matches a live event in the mailbox answers
  201 with that event, unchanged (logged ``deduplicated=True``). Once it is deleted the same id
  creates a new event. ``dedupe_transaction_ids=False`` switches this off, to test the fallback
  lookup by extended property. PATCH may not change ``transactionId`` → 400.
- ``Prefer: IdType="ImmutableId"`` is recorded (``immutable_id``) and acknowledged; ids never change.
- Bodies: :mod:`.schema`; ``start``/``end`` required on create; end before start → 400
  ``ErrorCalendarEndDateIsEarlierThanStartDate``. Every write records ``has_attendees``.
- Responses: POST/PATCH return start/end in the zone they were written in, GET in UTC unless
  ``Prefer: outlook.timezone="..."``. HTML bodies come back wrapped in ``<html><head>...`` as
  Exchange does; ``location`` and ``locations`` mirror each other.
- Auth: a live Bearer token, else 401 ``InvalidAuthenticationToken``. Delegated tokens reach only
  their own mailbox (403 ``ErrorAccessDenied``); app-only tokens reach any mailbox via
  ``/users/{id}`` and get 400 on ``/me``. Reads need a Calendars.* scope, writes
  Calendars.ReadWrite. Unknown user → 404 ``ErrorInvalidUser``; unlicensed → 404
  ``MailboxNotEnabledForRESTAPI``.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from .. import tls
from ..oauth import AccessToken, OAuthError
from ..server import Request, Response, format_retry_after
from .batch import GraphBatch
from .identity import DEFAULT_SCOPES, GRAPH_APP_ID, MicrosoftIdentity
from .schema import (
    ANY_FILTER_RE,
    EXPAND_RE,
    GRAPH_DEFAULTS,
    GraphError,
    StoredEvent,
    apply_body,
    b64url,
    default_location,
    fmt_local,
    graph_error_body,
    normalize_prop_id,
    now_iso,
    validate_body,
    zone,
)
from .throttling import MailboxThrottling

__all__ = ["GraphEmulator", "GraphUser"]

_READ_SCOPES = frozenset(s.lower() for s in ("Calendars.Read", "Calendars.ReadWrite", "Calendars.ReadBasic",
                                             "Calendars.Read.Shared", "Calendars.ReadWrite.Shared",
                                             "Calendars.ReadBasic.All"))
_WRITE_SCOPES = frozenset(s.lower() for s in ("Calendars.ReadWrite", "Calendars.ReadWrite.Shared"))
_USER_SCOPES = frozenset(s.lower() for s in ("User.Read", "User.ReadWrite", "User.ReadBasic.All", "User.Read.All",
                                             "User.ReadWrite.All", "Directory.Read.All"))
DEFAULT_PAGE, MAX_PAGE = 10, 1000
_EVENT_ID_PREFIX = "AAMkAG"

# ---- state -----------------------------------------------------------------------------------


@dataclass
class GraphUser:
    """A work account with a mailbox and its calendars."""

    email: str  # userPrincipalName and mail, lower-case
    oid: str
    display_name: str
    licensed: bool = True
    calendars: dict[str, str] = field(default_factory=dict)  # id -> name; the first is the default
    default_calendar: str = ""



class GraphEmulator(GraphBatch, MailboxThrottling, MicrosoftIdentity):
    """Microsoft identity platform + Graph calendar on https://127.0.0.1. See the module docstring."""

    default_fault_kinds = frozenset({"api"})

    def __init__(self, start: bool = True, *, host: str = "127.0.0.1", port: int = 0,
                 clock: Callable[[], float] | None = None, tenant: str = "common", tenant_id: str | None = None,
                 tenant_domain: str = "contoso.onmicrosoft.com", dedupe_transaction_ids: bool = True) -> None:
        cert = tls.make_certificate((host, "localhost") if host != "localhost" else ("localhost", "127.0.0.1"))
        self._tls_files = tls.write_files(cert, owner=self)
        self.ca_file = self._tls_files.ca_file
        self.dedupe_transaction_ids = dedupe_transaction_ids
        self._by_oid: dict[str, str] = {}
        self._events: dict[str, dict[str, StoredEvent]] = {}  # email -> id -> event (all calendars)
        super().__init__(host=host, port=port, start=start, clock=clock, tenant=tenant, tenant_id=tenant_id,
                         tenant_domain=tenant_domain, ssl_context=tls.server_context(self._tls_files))

    # ---- users and mailboxes ---------------------------------------------------------------

    @property
    def users(self) -> dict[str, GraphUser]:
        with self.lock:
            return {k: copy.deepcopy(v) for k, v in self._users.items()}

    def user(self, email: str) -> GraphUser:
        with self.lock:
            return copy.deepcopy(self._user(email))

    def add_user(self, email: str, licensed: bool = True, *, display_name: str | None = None,
                 scopes: tuple[str, ...] | str = DEFAULT_SCOPES, refresh_token: str | None = None,
                 client_id: str | None = None) -> str:
        """Create (or update) a work account with a mailbox; return a refresh token for a delegated grant.

        The grant is usable by any client unless ``client_id`` is given (skips the browser consent).
        """
        with self.lock:
            user = self._ensure_user(email, display_name)
            user.licensed = licensed
            scopes_t = tuple(scopes.split()) if isinstance(scopes, str) else tuple(scopes)
            return self._new_refresh(self._new_grant(user.email, client_id, scopes_t), refresh_token)

    def set_licensed(self, email: str, licensed: bool) -> None:
        with self.lock:
            self._user(email).licensed = licensed

    def add_calendar(self, email: str, name: str) -> str:
        with self.lock:
            user = self._user(email)
            cal_id = self._new_outlook_id()
            user.calendars[cal_id] = name
            return cal_id

    # ---- mailbox inspection and manipulation (what the person would do in Outlook) ---------

    def events(self, email: str, calendar_id: str | None = None) -> list[dict[str, Any]]:
        """Live events (all calendars, or one), in creation order, each with its extended properties."""
        with self.lock:
            user = self._user(email)
            return [self._inspect(s) for s in self._events.get(user.email, {}).values()
                    if calendar_id is None or s.calendar_id == calendar_id]

    def event(self, email: str, event_id: str) -> dict[str, Any] | None:
        with self.lock:
            user = self._user(email)
            s = self._events.get(user.email, {}).get(event_id)
            return self._inspect(s) if s else None

    def delete_event(self, email: str, event_id: str) -> None:
        """The person deletes the event in Outlook: later GET/PATCH/DELETE answer 404."""
        with self.lock:
            user = self._user(email)
            self._events.get(user.email, {}).pop(event_id, None)

    def modify_event(self, email: str, event_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        """Edit an event as the person would (drift); top-level keys replace, ``None`` resets."""
        with self.lock:
            user = self._user(email)
            stored = self._events[user.email][event_id]
            apply_body(stored, copy.deepcopy(changes), creating=False)
            self._touch(stored)
            return self._inspect(stored)

    def put_event(self, email: str, event: dict[str, Any], calendar_id: str | None = None) -> dict[str, Any]:
        """Place an event as the person would (no validation, no request log)."""
        with self.lock:
            user = self._user(email)
            stored = self._create(user, calendar_id or user.default_calendar, copy.deepcopy(event))
            return self._inspect(stored)

    @staticmethod
    def make_event_id() -> str:
        """A well-formed Outlook event id that names nothing (for 404 tests)."""
        return _EVENT_ID_PREFIX + base64.urlsafe_b64encode(secrets.token_bytes(96)).decode()

    # ---- internals: helpers ----------------------------------------------------------------

    def _ensure_user(self, email: str, display_name: str | None = None) -> GraphUser:
        email = email.lower()
        user = self._users.get(email)
        if user is None:
            oid = str(uuid.uuid4())
            name = display_name or email.split("@")[0].replace(".", " ").title()
            user = GraphUser(email=email, oid=oid, display_name=name)
            cal = self._new_outlook_id()
            user.calendars[cal] = "Calendar"
            user.default_calendar = cal
            self._users[email] = user
            self._by_oid[oid] = email
            self._events[email] = {}
        elif display_name:
            user.display_name = display_name
        return user

    def _user(self, email: str) -> GraphUser:
        user = self._users.get(email.lower())
        if user is None:
            raise KeyError(f"no emulated Microsoft user {email!r}; call add_user() first")
        return user

    def _canonical_mailbox(self, email_or_oid: str) -> str:
        key = email_or_oid.lower()
        return self._by_oid.get(key, key)

    def _find_user(self, ident: str) -> GraphUser | None:
        key = ident.lower()
        email = self._by_oid.get(key, key)
        return self._users.get(email)

    @staticmethod
    def _new_outlook_id() -> str:
        return _EVENT_ID_PREFIX + base64.urlsafe_b64encode(secrets.token_bytes(96)).decode()

    def _touch(self, stored: StoredEvent) -> None:
        stored.event["changeKey"] = b64url(secrets.token_bytes(15)) + "=="
        stored.event["lastModifiedDateTime"] = now_iso()

    def _inspect(self, stored: StoredEvent) -> dict[str, Any]:
        ev = copy.deepcopy(stored.event)
        ev["@odata.etag"] = f'W/"{ev["changeKey"]}"'
        ev["singleValueExtendedProperties"] = [dict(p) for p in stored.props.values()]
        return ev

    # ---- routing ---------------------------------------------------------------------------

    def classify(self, req: Request) -> None:
        if getattr(req, "_graph_classified", False):
            return
        req._graph_classified = True  # type: ignore[attr-defined]  # _process classifies before the base does
        seg = req.segments()
        if seg[:1] == ["v1.0"]:
            req.kind = "batch" if seg[1:] == ["$batch"] else "api"
            with self.lock:
                at = self._bearer(req)
                if at is not None:
                    req.info["app_id"] = at.client_id
                    mailbox = self._mailbox_for(seg[1:], at)
                    if mailbox is not None:
                        req.account = req.info["mailbox"] = mailbox
        elif len(seg) >= 2 and seg[1:] in (["v2.0", ".well-known", "openid-configuration"],
                                           [".well-known", "openid-configuration"], ["discovery", "v2.0", "keys"]):
            req.kind = "discovery"
        elif len(seg) == 4 and seg[1:3] == ["oauth2", "v2.0"] and seg[3] in ("token", "authorize"):
            req.kind = "token" if seg[3] == "token" else "consent"
        else:
            req.kind = "other"

    def _mailbox_for(self, rest: list[str], at: AccessToken) -> str | None:
        if rest[:1] == ["users"] and len(rest) >= 2:
            user = self._find_user(rest[1])
            return user.email if user else rest[1].lower()
        return at.email

    def route(self, req: Request) -> Response:
        try:
            if req.kind in ("api", "batch"):
                return self._api(req)
            if req.kind in ("discovery", "token", "consent"):
                return self._identity(req)
            raise GraphError(404, "NotFound", f"No emulated endpoint at {req.path}. Graph lives under /v1.0, the "
                                              "identity platform under /{tenant}/oauth2/v2.0/ and "
                                              "/{tenant}/v2.0/.well-known/openid-configuration.")
        except GraphError as e:
            return self._graph_response(e)
        except OAuthError as e:
            return self.oauth_response(e, req)

    def error_response(self, req: Request, status: int, reason: str | None, message: str | None,
                       retry_after: float | str | None = None) -> Response:
        headers = {"Retry-After": format_retry_after(retry_after)} if retry_after is not None else {}
        if req.kind in ("token", "consent", "discovery"):
            error = reason or {400: "invalid_grant", 401: "invalid_client", 429: "temporarily_unavailable",
                               503: "temporarily_unavailable"}.get(status, "server_error")
            code = {400: 9002313, 401: 7000215, 429: 90024, 503: 90024}.get(status, 90033)
            resp = self.oauth_response(OAuthError(status, error, message or "Injected failure.", code), req)
        else:
            code_default, message_default = GRAPH_DEFAULTS.get(status, ("UnknownError", "Error."))
            if reason == "backendError":  # base class wording for an emulator bug
                reason = "InternalServerError"
            resp = self._graph_response(GraphError(status, reason or code_default, message or message_default))
        resp.headers.update(headers)
        return resp

    def _graph_response(self, e: GraphError) -> Response:
        rid = str(uuid.uuid4())
        headers = {"request-id": rid, "client-request-id": rid}
        headers.update(e.headers)
        if e.status == 401:
            headers.setdefault("WWW-Authenticate", f'Bearer realm="", authorization_uri="{self.auth_url}", '
                                                   f'client_id="{GRAPH_APP_ID}"')
        return Response.json(e.status, graph_error_body(e.code, e.message, rid), headers)

    # ---- Graph -----------------------------------------------------------------------------

    def _api(self, req: Request) -> Response:
        prefer = req.headers.get("prefer", "")
        req.info["immutable_id"] = bool(re.search(r'idtype\s*=\s*"?immutableid"?', prefer, re.IGNORECASE))
        seg = req.segments()[1:]  # drop "v1.0"
        with self.lock:
            at = self._bearer(req)
            if at is None:
                auth = req.headers.get("authorization", "")
                message = "Access token is empty." if not auth.lower().startswith("bearer ") else \
                    "Lifetime validation failed, the token is expired."
                raise GraphError(401, "InvalidAuthenticationToken", message)
        if seg == ["$batch"]:
            if req.method != "POST":
                raise GraphError(405, "Request_BadRequest", "Only POST is supported on $batch.")
            return self._batch(req, at)
        resp = self._dispatch(req, seg, at)
        if req.info.get("immutable_id"):
            resp.headers.setdefault("Preference-Applied", 'IdType="ImmutableId"')
        return resp

    def _dispatch(self, req: Request, seg: list[str], at: AccessToken) -> Response:
        with self.lock:
            user, rest = self._owner(req, seg, at)
            op, calendar_id, event_id = self._match(rest, req.method, user)
            req.info.update(op=op, calendar_id=calendar_id, event_id=event_id)
            self._check_scope(op, at)
            if op not in ("user.get",) and not user.licensed:
                raise GraphError(404, "MailboxNotEnabledForRESTAPI",
                                 "The mailbox is either inactive, soft-deleted, or is hosted on-premise.")
            self._admit(req, at.client_id, user.email)
            handler = getattr(self, "_op_" + op.replace(".", "_"))
            return handler(req, user, calendar_id, event_id)

    def _owner(self, req: Request, seg: list[str], at: AccessToken) -> tuple[GraphUser, list[str]]:
        if seg[:1] == ["me"]:
            if at.email is None:
                raise GraphError(400, "BadRequest", "/me request is only valid with delegated authentication flow.")
            return self._users[at.email], seg[1:]
        if seg[:1] == ["users"] and len(seg) >= 2:
            user = self._find_user(seg[1])
            if user is None:
                raise GraphError(404, "ErrorInvalidUser", f"The requested user '{seg[1]}' is invalid.")
            if at.email is not None and at.email != user.email:
                raise GraphError(403, "ErrorAccessDenied", "Access is denied. Check credentials and try again.")
            return user, seg[2:]
        segment = seg[0] if seg else ""
        raise GraphError(400, "BadRequest", f"Resource not found for the segment '{segment}'.")

    def _match(self, rest: list[str], method: str, user: GraphUser) -> tuple[str, str | None, str | None]:
        n = len(rest)

        def verb(mapping: dict[str, str]) -> str:
            op = mapping.get(method)
            if op is None:
                raise GraphError(405, "Request_BadRequest", f"The HTTP method '{method}' is not allowed here.")
            return op

        if n == 0:
            return verb({"GET": "user.get"}), None, None
        if rest[0] == "calendar":
            if n == 1:
                return verb({"GET": "calendar.get"}), user.default_calendar, None
            if rest[1] == "events":
                return self._events_op(rest[2:], verb, user.default_calendar, user)
        if rest[0] == "calendars":
            if n == 1:
                return verb({"GET": "calendars.list"}), None, None
            cal = rest[1]
            self._check_id(cal)
            if cal not in user.calendars:
                raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")
            if n == 2:
                return verb({"GET": "calendar.get"}), cal, None
            if rest[2] == "events":
                return self._events_op(rest[3:], verb, cal, user)
        if rest[0] == "events":
            return self._events_op(rest[1:], verb, None, user)
        raise GraphError(400, "BadRequest", f"Resource not found for the segment '{rest[0]}'.")

    def _events_op(self, rest: list[str], verb, calendar_id: str | None, user: GraphUser):
        if not rest:
            return verb({"GET": "events.list", "POST": "events.create"}), calendar_id, None
        if len(rest) == 1:
            self._check_id(rest[0])
            return verb({"GET": "events.get", "PATCH": "events.update", "DELETE": "events.delete"}), \
                calendar_id, rest[0]
        raise GraphError(501, "NotImplemented", f"The calsync Graph emulator does not implement "
                                                f"events/{'/'.join(rest[1:])}.")

    @staticmethod
    def _check_id(ident: str) -> None:
        ok = ident.startswith("AAMk")
        if ok:
            try:
                base64.urlsafe_b64decode(ident[4:] + "=" * (-len(ident[4:]) % 4))
            except ValueError:
                ok = False
        if not ok:
            raise GraphError(400, "ErrorInvalidIdMalformed", "Id is malformed.")

    def _check_scope(self, op: str, at: AccessToken) -> None:
        if op == "user.get":
            needed = _USER_SCOPES
        elif op in ("events.create", "events.update", "events.delete"):
            needed = _WRITE_SCOPES
        else:
            needed = _READ_SCOPES
        if not needed & frozenset(at.scopes):
            raise GraphError(403, "ErrorAccessDenied", "Access is denied. Check credentials and try again.")

    # -- users and calendars

    def _context(self, user: GraphUser, tail: str) -> str:
        return f"{self.graph_url}/$metadata#users('{user.oid}'){tail}"

    def _op_user_get(self, req: Request, user: GraphUser, _c: None, _e: None) -> Response:
        given, _, surname = user.display_name.partition(" ")
        return Response.json(200, {
            "@odata.context": f"{self.graph_url}/$metadata#users/$entity", "businessPhones": [],
            "displayName": user.display_name, "givenName": given, "jobTitle": None, "mail": user.email,
            "mobilePhone": None, "officeLocation": None, "preferredLanguage": "en-US", "surname": surname or None,
            "userPrincipalName": user.email, "id": user.oid})

    def _calendar_json(self, user: GraphUser, cal: str) -> dict[str, Any]:
        return {"id": cal, "name": user.calendars[cal], "color": "auto", "hexColor": "",
                "isDefaultCalendar": cal == user.default_calendar, "changeKey": "emu", "canShare": True,
                "canViewPrivateItems": True, "canEdit": True,
                "allowedOnlineMeetingProviders": ["teamsForBusiness"],
                "defaultOnlineMeetingProvider": "teamsForBusiness", "isTallyingResponses": True,
                "isRemovable": cal != user.default_calendar,
                "owner": {"name": user.display_name, "address": user.email}}

    def _op_calendar_get(self, req: Request, user: GraphUser, cal: str, _e: None) -> Response:
        out = {"@odata.context": self._context(user, "/calendars/$entity")}
        out.update(self._calendar_json(user, cal))
        return Response.json(200, out)

    def _op_calendars_list(self, req: Request, user: GraphUser, _c: None, _e: None) -> Response:
        return Response.json(200, {"@odata.context": self._context(user, "/calendars"),
                                   "value": [self._calendar_json(user, c) for c in user.calendars]})

    # -- events

    def _body(self, req: Request) -> dict[str, Any]:
        ctype = req.headers.get("content-type", "")
        if req.body and "json" not in ctype.lower():
            raise GraphError(415, "UnsupportedMediaType", "Content-Type must be application/json.")
        try:
            body = json.loads(req.body.decode("utf-8")) if req.body else None
        except (ValueError, UnicodeDecodeError):
            raise GraphError(400, "BadRequest", "Unable to read JSON request payload. Please ensure Content-Type "
                                                "header is set and payload is of valid JSON format.") from None
        if body is None:
            raise GraphError(400, "BadRequest", "Empty Payload. JSON content expected.")
        validate_body(body)
        req.info["has_attendees"] = bool(body.get("attendees"))
        return body

    def _stored(self, user: GraphUser, event_id: str, calendar_id: str | None) -> StoredEvent:
        stored = self._events[user.email].get(event_id)
        if stored is None or (calendar_id is not None and stored.calendar_id != calendar_id):
            raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")
        return stored

    def _op_events_create(self, req: Request, user: GraphUser, calendar_id: str | None, _e: None) -> Response:
        body = self._body(req)
        tx = body.get("transactionId")
        req.info["transaction_id"] = tx
        if tx is not None and self.dedupe_transaction_ids:
            for s in self._events[user.email].values():
                if s.event.get("transactionId") == tx:
                    req.info.update(event_id=s.event["id"], deduplicated=True)
                    return self._event_response(req, user, s, 201, default_zone=None)
        for key in ("start", "end"):
            if not isinstance(body.get(key), dict):
                raise GraphError(400, "ErrorInvalidRequest", f"The '{key}' property is required to create an event.")
        stored = self._create(user, calendar_id or user.default_calendar, body)
        req.info.update(event_id=stored.event["id"], deduplicated=False)
        return self._event_response(req, user, stored, 201, default_zone=None)

    def _create(self, user: GraphUser, calendar_id: str, body: dict[str, Any]) -> StoredEvent:
        now = now_iso()
        eid = self._new_outlook_id()
        ev: dict[str, Any] = {
            "id": eid, "createdDateTime": now, "lastModifiedDateTime": now, "changeKey": "", "categories": [],
            "originalStartTimeZone": "UTC", "originalEndTimeZone": "UTC",
            "iCalUId": "040000008200E00074C5B7101A82E00800000000" + secrets.token_hex(28).upper(),
            "reminderMinutesBeforeStart": 15, "isReminderOn": True, "hasAttachments": False, "subject": "",
            "bodyPreview": "", "importance": "normal", "sensitivity": "normal", "isAllDay": False,
            "isCancelled": False, "isOrganizer": True, "responseRequested": True, "seriesMasterId": None,
            "showAs": "busy", "type": "singleInstance",
            "webLink": f"https://outlook.office365.com/owa/?itemid={quote(eid, safe='')}&exvsurl=1&path=/calendar/item",
            "onlineMeetingUrl": None, "isOnlineMeeting": False, "onlineMeetingProvider": "unknown",
            "allowNewTimeProposals": True, "isDraft": False, "hideAttendees": False, "recurrence": None,
            "onlineMeeting": None, "responseStatus": {"response": "organizer", "time": "0001-01-01T00:00:00Z"},
            "body": {"contentType": "html", "content": ""},
            "start": {"dateTime": fmt_local(datetime(2000, 1, 1)), "timeZone": "UTC"},
            "end": {"dateTime": fmt_local(datetime(2000, 1, 1)), "timeZone": "UTC"},
            "location": default_location(), "locations": [], "attendees": [],
            "organizer": {"emailAddress": {"name": user.display_name, "address": user.email}},
        }
        stored = StoredEvent(ev, calendar_id)
        apply_body(stored, body, creating=True)
        self._touch(stored)
        self._events[user.email][eid] = stored
        return stored

    def _op_events_get(self, req: Request, user: GraphUser, calendar_id: str | None, event_id: str) -> Response:
        self._check_query(req)
        stored = self._stored(user, event_id, calendar_id)
        return self._event_response(req, user, stored, 200, default_zone="UTC")

    def _op_events_update(self, req: Request, user: GraphUser, calendar_id: str | None, event_id: str) -> Response:
        body = self._body(req)
        stored = self._stored(user, event_id, calendar_id)
        want = req.headers.get("if-match")
        if want and want != "*" and want.strip() != f'W/"{stored.event["changeKey"]}"':
            raise GraphError(412, "ErrorIrresolvableConflict", "The change key passed in the request does not match "
                                                               "the current change key for the item.")
        req.info["transaction_id"] = body.get("transactionId")
        apply_body(stored, body, creating=False)
        self._touch(stored)
        return self._event_response(req, user, stored, 200, default_zone=None)

    def _op_events_delete(self, req: Request, user: GraphUser, calendar_id: str | None, event_id: str) -> Response:
        self._stored(user, event_id, calendar_id)
        del self._events[user.email][event_id]
        return Response(204, b"", {"request-id": str(uuid.uuid4())})

    _QUERY_OPTIONS = ("$filter", "$top", "$skip", "$select", "$expand", "$orderby", "$count")

    def _check_query(self, req: Request) -> None:
        for name in req.query:
            if name.startswith("$") and name.lower() not in self._QUERY_OPTIONS:
                raise GraphError(400, "BadRequest", f"Query option '{name}' is not supported.")

    def _op_events_list(self, req: Request, user: GraphUser, calendar_id: str | None, _e: None) -> Response:
        self._check_query(req)
        cal = calendar_id or user.default_calendar
        rows = [s for s in self._events[user.email].values() if s.calendar_id == cal]
        flt = req.param("$filter")
        if flt:
            m = ANY_FILTER_RE.match(flt)
            if not m:
                raise GraphError(501, "NotImplemented",
                                 f"The calsync Graph emulator supports only $filter=singleValueExtendedProperties/Any("
                                 f"ep: ep/id eq '...' and ep/value eq '...'); got: {flt}")
            pid = normalize_prop_id(m["id"].replace("''", "'"))
            value = m["value"].replace("''", "'").lower()
            rows = [s for s in rows if pid in s.props and s.props[pid]["value"].lower() == value]
            req.info["filter_prop"] = pid
        order = req.param("$orderby")
        if order:
            field_name, _, direction = order.strip().partition(" ")
            keyfn = {"start/datetime": lambda s: s.start or datetime.min.replace(tzinfo=UTC),
                     "createddatetime": lambda s: s.event["createdDateTime"],
                     "lastmodifieddatetime": lambda s: s.event["lastModifiedDateTime"]}.get(field_name.lower())
            if keyfn is None or direction.strip().lower() not in ("", "asc", "desc"):
                raise GraphError(501, "NotImplemented", f"The calsync Graph emulator cannot order by '{order}'.")
            rows.sort(key=keyfn, reverse=direction.strip().lower() == "desc")
        prefer = req.headers.get("prefer", "")
        m = re.search(r"odata\.maxpagesize\s*=\s*(\d+)", prefer, re.IGNORECASE)
        try:
            top = int(req.param("$top")) if req.param("$top") is not None else None
            skip = int(req.param("$skip") or 0)
        except ValueError:
            raise GraphError(400, "BadRequest", "Invalid value for $top or $skip.") from None
        if (top is not None and top < 0) or skip < 0:
            raise GraphError(400, "BadRequest", "Invalid value for $top or $skip.")
        page_size = min(top if top is not None else (int(m.group(1)) if m else DEFAULT_PAGE), MAX_PAGE)
        page = rows[skip:skip + page_size]
        zone = self._prefer_zone(req) or "UTC"
        out: dict[str, Any] = {"@odata.context": self._context(user, "/events"),
                               "value": [self._render(req, user, s, zone) for s in page]}
        if skip + page_size < len(rows):
            query = {k: v[-1] for k, v in req.query.items() if k != "$skip"}
            query["$skip"] = str(skip + page_size)
            path = urlsplit(req.raw_path).path.removeprefix("/v1.0")
            out["@odata.nextLink"] = f"{self.graph_url}{path}?{urlencode(query, quote_via=quote, safe='$/')}"
        req.info["items"] = len(page)
        headers = {"request-id": str(uuid.uuid4())}
        if m:
            headers["Preference-Applied"] = f"odata.maxpagesize={m.group(1)}"
        return Response.json(200, out, headers)

    @staticmethod
    def _prefer_zone(req: Request) -> str | None:
        m = re.search(r'outlook\.timezone\s*=\s*"([^"]+)"', req.headers.get("prefer", ""), re.IGNORECASE)
        if m and zone(m.group(1)) is not None:
            return m.group(1)
        return None

    def _render(self, req: Request, user: GraphUser, stored: StoredEvent, zone_name: str | None) -> dict[str, Any]:
        ev = copy.deepcopy(stored.event)
        ev["@odata.etag"] = f'W/"{ev["changeKey"]}"'
        if zone_name is not None:
            tz = zone(zone_name)
            for key, instant in (("start", stored.start), ("end", stored.end)):
                if instant is not None:
                    ev[key] = {"dateTime": fmt_local(instant.astimezone(tz).replace(tzinfo=None)),
                               "timeZone": zone_name}
        expand = req.param("$expand")
        if expand:
            m = EXPAND_RE.match(expand)
            if not m:
                raise GraphError(501, "NotImplemented",
                                 "The calsync Graph emulator supports only $expand=singleValueExtendedProperties("
                                 f"$filter=id eq '...'); got: {expand}")
            pid = normalize_prop_id(m["id"].replace("''", "'"))
            if pid in stored.props:
                ev["singleValueExtendedProperties"] = [dict(stored.props[pid])]
        select = req.param("$select")
        if select:
            keep = {s.strip() for s in select.split(",")} | {"id", "@odata.etag", "singleValueExtendedProperties"}
            ev = {k: v for k, v in ev.items() if k in keep}
        return ev

    def _event_response(self, req: Request, user: GraphUser, stored: StoredEvent, status: int,
                        default_zone: str | None) -> Response:
        zone = self._prefer_zone(req) or default_zone
        out = {"@odata.context": self._context(user, "/events/$entity")}
        out.update(self._render(req, user, stored, zone))
        headers = {"request-id": str(uuid.uuid4())}
        if self._prefer_zone(req):
            headers["Preference-Applied"] = f'outlook.timezone="{self._prefer_zone(req)}"'
        if status == 201:
            headers["Location"] = f"{self.graph_url}/users('{user.oid}')/events('{stored.event['id']}')"
        return Response.json(status, out, headers)
