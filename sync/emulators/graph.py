"""A local Microsoft identity platform (v2.0) + Microsoft Graph calendar emulator for msal and requests.

Microsoft cannot be reached from the test machines, so tests, benchmarks and ``calsync demo`` run
the real ``msal`` and ``requests`` against this HTTPS server on 127.0.0.1::

    emu = GraphEmulator()                          # starts at once; or `with GraphEmulator() as emu:`
    refresh = emu.add_user("mentee@contoso.com")   # a refresh token, as if the user had consented
    http = emu.session()                           # trusts emu.ca_file (see GraphEmulator.session)
    app = msal.ConfidentialClientApplication(
        "client-id", client_credential="secret", authority=emu.authority,   # == f"{emu.authority_url}/common"
        http_client=http, instance_discovery=False)
    result = app.acquire_token_by_refresh_token(refresh, scopes=["Calendars.ReadWrite"])
    http.post(f"{emu.graph_url}/me/events", json={...},
              headers={"Authorization": "Bearer " + result["access_token"]})

MSAL options (verified against msal 1.39, ``msal/authority.py`` and ``application.py``): the
authority must be ``https://host[:port]/tenant`` (``canonicalize`` raises otherwise, hence TLS).
``instance_discovery=False`` is what keeps MSAL from asking ``login.microsoftonline.com`` whether
the host is a known cloud (``Authority._initialize_entra_authority``) and from looking up cloud
aliases on silent calls (``_get_authority_aliases``). ``validate_authority=False`` would skip both
as well (it marks the authority "known to developer"); passing either is enough, passing
``instance_discovery=False`` is the documented switch. The constructor then GETs
``{authority}/v2.0/.well-known/openid-configuration`` from this server; everything else (token
endpoint, authorize endpoint) comes from that document. MSAL keys its cache by the host without
the port (``Authority.instance``) and by the tenant in the token endpoint's path.

Python API (thread-safe; configuration attributes may change at any time):

- lifecycle: ``GraphEmulator(start=True, port=0, clock=None, tenant="common",
  dedupe_transaction_ids=True)``, context manager, ``.stop()``; ``.authority_url``
  (``https://127.0.0.1:PORT``), ``.tenant``, ``.tenant_id`` (GUID), ``.tenant_domain``,
  ``.authority`` (``authority_url/tenant``), ``.graph_url`` (``authority_url/v1.0``), ``.ca_file``
  (PEM of the test CA), ``.session()`` (a ``requests.Session`` that trusts it — read its docstring:
  ``Session.verify = ca_file`` alone fails where ``REQUESTS_CA_BUNDLE`` is set), ``.token_url``,
  ``.auth_url``, ``.openid_configuration_url``.
- accounts: ``.add_user(email, licensed=True, display_name=, scopes=, refresh_token=, client_id=)``
  → refresh token (a new delegated grant, skips the browser; for an existing user it also sets
  ``licensed``); ``.set_licensed(email, bool)``;
  ``.add_calendar(email, name)`` → id; ``.user(email)``/``.users``; ``.issue_refresh_token``;
  ``.access_token_for(email | None, ...)`` (raw-HTTP tests; ``None`` = app-only);
  ``.add_client(id, secret, redirect_uris)`` (none registered = any client accepted);
  ``.app_permissions`` (application permissions with admin consent, for client credentials);
  ``.consent_decision`` ("allow"/"deny"), ``.consent_user``, ``.auto_add_users``, ``.token_lifetime``.
- token death on demand (the refresh grant answers AAD's error shape from then on):
  ``.revoke(refresh_token | email, code=50173)`` (``invalid_grant``; also kills live access tokens),
  ``.expire_refresh(refresh_token | email)`` (``invalid_grant`` AADSTS700082),
  ``.require_interaction(email, code=50076)`` (``interaction_required``),
  ``.remove_consent(email)`` (``invalid_grant`` AADSTS65001, suberror ``consent_required``).
  A new consent (authorize + code exchange) starts a fresh, healthy grant.
  ``.expire_access_tokens(email=None, caches=())``: access tokens stop working here (Graph 401), and
  the access tokens in the given msal ``TokenCache`` objects are marked expired, so the next
  ``acquire_token_silent*`` goes to the token endpoint (MSAL's cache runs on the wall clock).
- mailbox limits: ``.max_concurrent_per_mailbox`` (4), ``.requests_per_mailbox_per_window``
  (10 000), ``.mailbox_window`` (600 s on ``clock``), ``.concurrency_retry_after`` (1 s),
  ``.max_in_flight(email)`` (highest concurrency ever attempted for that mailbox, the rejected
  request included), ``.in_flight(email)``, ``.window_used(email)``, ``.reset_throttling()``.
- faults (from :mod:`sync.emulators.base`): ``.fail_next(n, status, reason, retry_after=, body=,
  path_contains=, method=)`` (``reason`` is the Graph error code, or the OAuth ``error`` on the
  token endpoint), ``.lose_next_response(n, reset=True)``, ``.timeout_next(n, seconds, applied=)``,
  ``.latency``. Without ``path_contains`` faults hit Graph calls only (kind "api"), not tokens.
- mailboxes: ``.events(email, calendar_id=None)`` (live events of all calendars, or one; each with
  its ``singleValueExtendedProperties``), ``.event(email, id)``; as the user in Outlook:
  ``.delete_event`` (drift: the person deleted it), ``.modify_event(email, id, changes)``,
  ``.put_event`` (a foreign event); ``.make_event_id()`` (well-formed, unknown id).
- inspection: ``.request_log`` (entries with method, path, query, status, account = mailbox, kind
  "api"/"batch"/"token"/"consent"/"discovery"/"other", fault, and info keys op, mailbox, app_id,
  event_id, calendar_id, transaction_id, deduplicated, has_attendees, immutable_id, throttled,
  grant_type, pkce (consent: "S256"/"plain"/None), batch_id), ``.requests(**filters)``,
  ``.count(...)``, ``.clear_log()``, ``.internal_errors``. Import from ``sync.emulators.graph``.

Identity endpoints (``{tenant}`` = common | organizations | the tenant id | the tenant domain;
anything else answers AADSTS90002 as Azure does for an unknown tenant):

- ``/{tenant}/v2.0/.well-known/openid-configuration``, ``/{tenant}/discovery/v2.0/keys``.
- ``/{tenant}/oauth2/v2.0/authorize`` (GET): consent that redirects at once to
  ``redirect_uri?code&client_info&state&session_state`` for ``login_hint`` (else ``consent_user``,
  else the first user); records PKCE ``code_challenge`` and the OIDC ``nonce`` (echoed in the
  ``id_token``, which MSAL checks). ``response_mode=form_post`` answers the auto-submitting form.
- ``/{tenant}/oauth2/v2.0/token`` (POST form): ``authorization_code`` (+PKCE S256/plain),
  ``refresh_token`` (a NEW refresh token every time, the old one stays valid, as Microsoft
  documents: "refresh tokens replace themselves with a fresh token upon every use" and old ones
  are not revoked), ``client_credentials`` (scope must be ``{resource}/.default``, tenant must not be
  common/organizations: AADSTS50059). Responses carry ``access_token``, ``refresh_token``,
  ``expires_in``, ``ext_expires_in``, ``token_type``, ``scope``, ``id_token`` (HS256 JWT: iss, aud,
  exp, iat, nbf, oid, tid, sub, preferred_username, name, nonce), ``client_info`` (base64url of
  ``{"uid": oid, "utid": tenant_id}``: MSAL's ``home_account_id`` is ``oid.tenant_id``).
  Errors: ``{"error", "error_description": "AADSTS<code>: ... Trace ID ...", "error_codes": [code],
  "timestamp", "trace_id", "correlation_id", "error_uri"[, "suberror"]}``.

Graph endpoints (under ``/v1.0``; ``{owner}`` = ``me`` | ``users/{id | userPrincipalName}``):

- ``{owner}/events``, ``{owner}/calendar/events``, ``{owner}/calendars/{id}/events``: POST creates
  (201), GET lists (default page 10, ``$top`` ≤ 1000, ``Prefer: odata.maxpagesize``, ``$skip``
  paging through ``@odata.nextLink``, ``$select``, ``$orderby`` on start/dateTime, createdDateTime,
  lastModifiedDateTime, ``$filter=singleValueExtendedProperties/Any(ep: ep/id eq '..' and ep/value
  eq '..')``, ``$expand=singleValueExtendedProperties($filter=id eq '..')``). ``{owner}/events``
  lists the default calendar; by id it reaches any calendar of the mailbox.
- ``.../events/{id}``: GET, PATCH (top-level properties replace, extended properties upsert,
  ``If-Match`` checked against the ``@odata.etag``), DELETE (204). Unknown id → 404
  ``ErrorItemNotFound``; an id that is not an Outlook id (e.g. a Google id) → 400
  ``ErrorInvalidIdMalformed``.
- ``{owner}``, ``{owner}/calendar``, ``{owner}/calendars[/{id}]``: GET. ``/$batch``: up to 20
  requests (400 beyond), run in order, ``dependsOn`` honoured (424 after a failed dependency),
  each item counted against the mailbox window and logged as its own request; injected
  ``fail_next`` faults apply to items (the ``$batch`` request itself only with ``path_contains``).
  Other Graph paths answer 400 ``BadRequest`` "Resource not found for the segment ...".

Behaviour worth knowing (as Microsoft's identity platform and Graph references document them; error
codes and wording they do not document follow what AAD and Graph are publicly reported to answer and were
not checked against the live service — match on status and ``error``/``code``, never on text):

- MSAL itself (1.39, observed here): a 4xx from the token endpoint comes back as the error dict, a
  5xx raises ``msal.exceptions.MsalServiceError``; identical token POSTs that got 400 are replayed
  from MSAL's cache for 60 s, and 429/5xx with ``Retry-After`` for that long, without reaching the
  server (``msal/throttled_http_client.py``).

- ``transactionId``: Microsoft documents the property ("for the server to avoid redundant POST
  operations in case of client retries") but not what a repeated POST returns (notes: NOT FOUND).
  One observed account (blog.rykoma.net 2020-10-05, Japanese): repeating the identical POST
  "answers 201, but no new event is created". So: a POST whose ``transactionId`` matches a live
  event in the same mailbox answers 201 with that existing event, unchanged, and creates nothing
  (logged ``deduplicated=True``); the new body is ignored even if it differs (undocumented —
  callers must not rely on a retry carrying changes). Once the event is deleted, the same
  ``transactionId`` creates a new event (emulator choice). ``dedupe_transaction_ids=False``
  switches de-duplication off, to test the fallback lookup by extended property. PATCH may not
  change ``transactionId`` (documented) → 400 ``ErrorInvalidRequest``. The property is returned
  only when set (documented).
- ``Prefer: IdType="ImmutableId"`` is recorded (``immutable_id`` in the log) and acknowledged in
  ``Preference-Applied``; ids never change here, whatever the header.
- Bodies are checked against the v1.0 ``event`` property names (and those of its complex types),
  JSON types and enum values: an unknown property → 400 ``RequestBodyRead`` "The property 'x' does
  not exist on type 'microsoft.graph.event'..." (OData's wording). Read-only properties sent back
  are ignored. ``start``/``end`` are required on create; ``timeZone`` must be an IANA or Windows
  zone (400 ``TimeZoneNotSupportedException``); end before start → 400
  ``ErrorCalendarEndDateIsEarlierThanStartDate``. Every write records ``has_attendees``.
- Responses: POST/PATCH return start/end in the zone they were written in, GET in UTC unless
  ``Prefer: outlook.timezone="..."`` (documented "By default, the start time is in UTC"). HTML
  bodies come back wrapped in ``<html><head>...`` as Exchange does; ``location`` and
  ``locations`` mirror each other.
- Auth: every Graph call needs a live Bearer token from the token endpoint, else 401
  ``InvalidAuthenticationToken``. Delegated tokens reach only their own mailbox (``/users/{other}``
  → 403 ``ErrorAccessDenied``); app-only tokens reach any mailbox via ``/users/{id}`` and get 400
  on ``/me``. Reads need a Calendars.* scope/role, writes Calendars.ReadWrite, else 403.
- Mailboxes: unknown user → 404 ``ErrorInvalidUser``; unlicensed → 404
  ``MailboxNotEnabledForRESTAPI``.
- Limits, per (app id, mailbox) as documented: a request arriving while
  ``max_concurrent_per_mailbox`` are in flight → 429 ``ApplicationThrottled`` "Application is over
  its MailboxConcurrency limit." (that wording is the one clients report) with ``Retry-After``;
  beyond ``requests_per_mailbox_per_window`` admitted requests in ``mailbox_window`` → 429
  ``ApplicationThrottled`` with ``Retry-After`` = seconds until the window frees a slot. A request
  is in flight from arrival (before ``latency``) until its answer is ready (a ``timeout_next``
  answer's extra delay is not counted). Rejected and faulted requests do not use the window.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import html
import json
import re
import secrets
import time
import traceback
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import requests
import requests.adapters

from . import tls
from .base import EmulatorServer, Fault, Request, Response, SlidingWindow, _fmt_retry_after, pkce_matches

__all__ = ["DEFAULT_SCOPES", "GraphEmulator", "GraphUser", "GRAPH_RESOURCE"]

GRAPH_RESOURCE = "https://graph.microsoft.com"
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
OIDC_SCOPES = frozenset({"openid", "profile", "email", "offline_access"})
DEFAULT_SCOPES = ("Calendars.ReadWrite", "User.Read", "openid", "profile", "email", "offline_access")
_READ_SCOPES = frozenset(s.lower() for s in ("Calendars.Read", "Calendars.ReadWrite", "Calendars.ReadBasic",
                                             "Calendars.Read.Shared", "Calendars.ReadWrite.Shared",
                                             "Calendars.ReadBasic.All"))
_WRITE_SCOPES = frozenset(s.lower() for s in ("Calendars.ReadWrite", "Calendars.ReadWrite.Shared"))
_USER_SCOPES = frozenset(s.lower() for s in ("User.Read", "User.ReadWrite", "User.ReadBasic.All", "User.Read.All",
                                             "User.ReadWrite.All", "Directory.Read.All"))
_GENERIC_TENANTS = ("common", "organizations", "consumers")
MAX_BATCH = 20
DEFAULT_PAGE, MAX_PAGE = 10, 1000
_EVENT_ID_PREFIX = "AAMkAG"

# Windows zone names Graph accepts besides IANA ones (a subset; enough for tests and the demo).
_WINDOWS_ZONES = {
    "UTC": "UTC", "GMT Standard Time": "Europe/London", "Greenwich Standard Time": "Atlantic/Reykjavik",
    "W. Europe Standard Time": "Europe/Berlin", "Romance Standard Time": "Europe/Paris",
    "Central Europe Standard Time": "Europe/Budapest", "Central European Standard Time": "Europe/Warsaw",
    "E. Europe Standard Time": "Europe/Chisinau", "FLE Standard Time": "Europe/Kiev",
    "Eastern Standard Time": "America/New_York", "Central Standard Time": "America/Chicago",
    "Mountain Standard Time": "America/Denver", "Pacific Standard Time": "America/Los_Angeles",
    "US Mountain Standard Time": "America/Phoenix", "Alaskan Standard Time": "America/Anchorage",
    "Hawaiian Standard Time": "Pacific/Honolulu", "E. South America Standard Time": "America/Sao_Paulo",
    "India Standard Time": "Asia/Kolkata", "China Standard Time": "Asia/Shanghai",
    "Tokyo Standard Time": "Asia/Tokyo", "Singapore Standard Time": "Asia/Singapore",
    "AUS Eastern Standard Time": "Australia/Sydney", "New Zealand Standard Time": "Pacific/Auckland",
    "South Africa Standard Time": "Africa/Johannesburg", "Arabian Standard Time": "Asia/Dubai",
}


# ---- errors ----------------------------------------------------------------------------------


class GraphError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}


class AadError(Exception):
    """An identity-platform error: ``error`` (OAuth), ``code`` (the AADSTS number)."""

    def __init__(self, status: int, error: str, code: int, description: str, suberror: str | None = None,
                 page: bool = False) -> None:
        super().__init__(description)
        self.status, self.error, self.code, self.description = status, error, code, description
        self.suberror = suberror
        self.page = page  # answer as an HTML error page (browser-facing endpoints)


_GRAPH_DEFAULTS: dict[int, tuple[str, str]] = {
    400: ("BadRequest", "Bad request."),
    401: ("InvalidAuthenticationToken", "Access token validation failure."),
    403: ("ErrorAccessDenied", "Access is denied. Check credentials and try again."),
    404: ("ErrorItemNotFound", "The specified object was not found in the store."),
    409: ("ErrorConflict", "Conflict."),
    412: ("ErrorIrresolvableConflict",
          "The change key passed in the request does not match the current change key for the item."),
    429: ("TooManyRequests", "Too many requests. Please retry again later."),
    500: ("InternalServerError", "Internal server error."),
    502: ("BadGateway", "Bad gateway."),
    503: ("ServiceUnavailable", "The service is temporarily unavailable. Please retry again later."),
    504: ("GatewayTimeout", "Gateway timeout."),
}


def _now_iso(precision: int = 7) -> str:
    now = datetime.now(UTC)
    frac = f"{now.microsecond:06d}0"[:precision]
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + frac + "Z"


def graph_error_body(code: str, message: str, request_id: str | None = None) -> dict[str, Any]:
    rid = request_id or str(uuid.uuid4())
    return {"error": {"code": code, "message": message,
                      "innerError": {"date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
                                     "request-id": rid, "client-request-id": rid}}}


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


# ---- event schema (v1.0 property names; read-only ones accepted and ignored) ------------------


RO = "ro"  # read-only: accepted in a body, ignored


@dataclass(frozen=True)
class _T:
    name: str
    props: dict[str, Any]


_ENUMS = {
    "importance": ("low", "normal", "high"),
    "sensitivity": ("normal", "personal", "private", "confidential"),
    "showAs": ("free", "tentative", "busy", "oof", "workingElsewhere", "unknown"),
    "onlineMeetingProvider": ("unknown", "teamsForBusiness", "skypeForBusiness", "skypeForConsumer"),
    "contentType": ("text", "html"),
    "attendeeType": ("required", "optional", "resource"),
    "locationType": ("default", "conferenceRoom", "homeAddress", "businessAddress", "geoCoordinates",
                     "streetAddress", "hotel", "restaurant", "localBusiness", "postalAddress"),
    "uniqueIdType": ("unknown", "locationStore", "directory", "private", "bing"),
    "response": ("none", "organizer", "tentativelyAccepted", "accepted", "declined", "notResponded"),
}
_DTTZ = _T("dateTimeTimeZone", {"dateTime": "string", "timeZone": "string"})
_EMAIL = _T("emailAddress", {"address": "string", "name": "string"})
_RECIPIENT = _T("recipient", {"emailAddress": _EMAIL})
_ADDRESS = _T("physicalAddress", {k: "string" for k in ("street", "city", "state", "countryOrRegion", "postalCode")})
_COORDS = _T("outlookGeoCoordinates", {k: "number" for k in ("accuracy", "altitude", "altitudeAccuracy",
                                                             "latitude", "longitude")})
_LOCATION = _T("location", {"displayName": "string", "locationEmailAddress": "string", "address": _ADDRESS,
                            "coordinates": _COORDS, "locationUri": "string", "locationType": "enum:locationType",
                            "uniqueId": "string", "uniqueIdType": "enum:uniqueIdType"})
_RESPONSE_STATUS = _T("responseStatus", {"response": "enum:response", "time": "string"})
_TIME_SLOT = _T("timeSlot", {"start": _DTTZ, "end": _DTTZ})
_ATTENDEE = _T("attendee", {"emailAddress": _EMAIL, "type": "enum:attendeeType", "status": _RESPONSE_STATUS,
                            "proposedNewTime": _TIME_SLOT})
_BODY = _T("itemBody", {"contentType": "enum:contentType", "content": "string"})
_SVEP = _T("singleValueLegacyExtendedProperty", {"id": "string", "value": "string"})
_MVEP = _T("multiValueLegacyExtendedProperty", {"id": "string", "value": ["string"]})
_PATTERN = _T("recurrencePattern", {"type": "string", "interval": "int", "month": "int", "dayOfMonth": "int",
                                    "daysOfWeek": ["string"], "firstDayOfWeek": "string", "index": "string"})
_RANGE = _T("recurrenceRange", {"type": "string", "startDate": "string", "endDate": "string",
                                "recurrenceTimeZone": "string", "numberOfOccurrences": "int"})
_RECURRENCE = _T("patternedRecurrence", {"pattern": _PATTERN, "range": _RANGE})
EVENT_TYPE = _T("event", {
    "allowNewTimeProposals": "bool", "attendees": [_ATTENDEE], "body": _BODY, "bodyPreview": RO,
    "categories": ["string"], "changeKey": RO, "createdDateTime": RO, "end": _DTTZ, "hasAttachments": RO,
    "hideAttendees": "bool", "iCalUId": RO, "id": RO, "importance": "enum:importance", "isAllDay": "bool",
    "isCancelled": RO, "isDraft": RO, "isOnlineMeeting": "bool", "isOrganizer": RO, "isReminderOn": "bool",
    "lastModifiedDateTime": RO, "location": _LOCATION, "locations": [_LOCATION], "onlineMeeting": RO,
    "onlineMeetingProvider": "enum:onlineMeetingProvider", "onlineMeetingUrl": RO, "organizer": _RECIPIENT,
    "originalEndTimeZone": "string", "originalStart": RO, "originalStartTimeZone": "string",
    "recurrence": _RECURRENCE, "reminderMinutesBeforeStart": "int", "responseRequested": "bool",
    "responseStatus": RO, "sensitivity": "enum:sensitivity", "seriesMasterId": RO, "showAs": "enum:showAs",
    "start": _DTTZ, "subject": "string", "transactionId": "string", "type": RO, "webLink": RO,
    # relationships
    "attachments": RO, "calendar": RO, "extensions": RO, "instances": RO, "cancelledOccurrences": RO,
    "exceptionOccurrences": RO, "multiValueExtendedProperties": [_MVEP], "singleValueExtendedProperties": [_SVEP],
})
_EDM = {"string": "Edm.String", "bool": "Edm.Boolean", "int": "Edm.Int32", "number": "Edm.Double"}


def validate_body(value: Any, t: _T = EVENT_TYPE) -> None:
    """Raise GraphError(400, RequestBodyRead) for unknown properties, wrong JSON types, bad enums."""
    if not isinstance(value, dict):
        raise GraphError(400, "RequestBodyRead",
                         f"An unexpected '{_json_kind(value)}' node was found when reading from the JSON reader. "
                         "A 'StartObject' node was expected.")
    for key, sub in value.items():
        if "@" in key:  # instance annotations: @odata.type, @odata.etag, ...
            continue
        spec = t.props.get(key)
        if spec is None:
            raise GraphError(400, "RequestBodyRead",
                             f"The property '{key}' does not exist on type 'microsoft.graph.{t.name}'. Make sure to "
                             "only use property names that are defined by the type or mark the type as open type.")
        _validate_value(sub, spec, key)


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "StartArray"
    if isinstance(value, dict):
        return "StartObject"
    return "PrimitiveValue"


def _validate_value(value: Any, spec: Any, key: str) -> None:
    if spec == RO or value is None:
        return
    if isinstance(spec, _T):
        validate_body(value, spec)
    elif isinstance(spec, list):
        if not isinstance(value, list):
            raise GraphError(400, "RequestBodyRead",
                             f"An unexpected '{_json_kind(value)}' node was found when reading from the JSON reader. "
                             "A 'StartArray' node was expected.")
        for item in value:
            _validate_value(item, spec[0], key)
    elif spec.startswith("enum:"):
        allowed = _ENUMS[spec[5:]]
        if not isinstance(value, str) or value.lower() not in {a.lower() for a in allowed}:
            raise GraphError(400, "RequestBodyRead", f"Requested value '{value}' was not found.")
    else:
        ok = {"string": lambda v: isinstance(v, str),
              "bool": lambda v: isinstance(v, bool),
              "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
              "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)}[spec](value)
        if not ok:
            raise GraphError(400, "RequestBodyRead",
                             f"Cannot convert the literal '{value}' to the expected type '{_EDM[spec]}'.")


# ---- extended property ids ---------------------------------------------------------------------

_PROP_TYPES = ("Binary", "Boolean", "Currency", "CLSID", "Double", "Float", "Integer", "Long", "Object",
               "Short", "String", "SystemTime", "ApplicationTime", "Error", "Null")
_PROP_ID_RE = re.compile(
    r"^(?P<type>\w+)\s+\{(?P<guid>[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})\}"
    r"\s+(?P<kind>Name|Id)\s+(?P<name>.+)$", re.IGNORECASE)
_PROP_TAG_RE = re.compile(r"^(?P<type>\w+)\s+0x(?P<tag>[0-9a-fA-F]{1,4})$", re.IGNORECASE)


def normalize_prop_id(prop_id: str) -> str:
    """Canonical form: type as in the docs, GUID lower-case in braces; the Name stays case-sensitive.

    Raises GraphError(400) for a malformed id.
    """
    prop_id = prop_id.strip()
    m = _PROP_ID_RE.match(prop_id)
    if m:
        ptype = _canon_type(m["type"])
        kind = m["kind"].capitalize()
        name = m["name"] if kind == "Name" else m["name"].lower()
        return f"{ptype} {{{m['guid'].lower()}}} {kind} {name}"
    m = _PROP_TAG_RE.match(prop_id)
    if m:
        return f"{_canon_type(m['type'])} 0x{int(m['tag'], 16):04x}"
    raise GraphError(400, "ErrorInvalidProperty",
                     f"The extended property id '{prop_id}' is not valid. Use '{{type}} {{guid}} Name {{name}}', "
                     "'{type} {guid} Id {id}' or '{type} {proptag}'.")


def _canon_type(t: str) -> str:
    for known in _PROP_TYPES:
        if known.lower() == t.lower():
            return known
    raise GraphError(400, "ErrorInvalidProperty", f"The extended property type '{t}' is not valid.")


_ANY_FILTER_RE = re.compile(
    r"^\s*singleValueExtendedProperties/any\(\s*(?P<v>\w+)\s*:\s*(?P=v)/id\s+eq\s+'(?P<id>(?:[^']|'')*)'\s+and\s+"
    r"(?P=v)/value\s+eq\s+'(?P<value>(?:[^']|'')*)'\s*\)\s*$", re.IGNORECASE)
_EXPAND_RE = re.compile(
    r"^\s*singleValueExtendedProperties\(\s*\$filter\s*=\s*id\s+eq\s+'(?P<id>(?:[^']|'')*)'\s*\)\s*$", re.IGNORECASE)


# ---- time zones and date-times -----------------------------------------------------------------


def _zone(name: str | None) -> ZoneInfo | None:
    if not name or not isinstance(name, str):
        return None
    name = _WINDOWS_ZONES.get(name, name)
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


_DT_RE = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2})?)(?:\.(\d+))?(Z|[+-]\d{2}:\d{2})?$", re.IGNORECASE)


def _parse_local(value: str) -> datetime:
    """Graph's ``dateTime``: local wall time, optional fraction (up to 7 digits), optional offset."""
    m = _DT_RE.match(value.strip()) if isinstance(value, str) else None
    if not m:
        raise ValueError(value)
    base = m.group(1) + ("" if m.group(1).count(":") == 2 else ":00")
    frac = (m.group(2) or "0")[:6].ljust(6, "0")
    off = m.group(3)
    text = f"{base}.{frac}" + ("" if off is None else ("+00:00" if off.upper() == "Z" else off))
    return datetime.fromisoformat(text)


def _fmt_local(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond:06d}0"


# ---- state -----------------------------------------------------------------------------------


@dataclass
class GraphUser:
    email: str  # userPrincipalName and mail, lower-case
    oid: str
    display_name: str
    licensed: bool = True
    calendars: dict[str, str] = field(default_factory=dict)  # id -> name; the first is the default
    default_calendar: str = ""


@dataclass
class _Grant:
    email: str
    client_id: str | None  # None: usable by any client (tokens a platform imported)
    scopes: tuple[str, ...]  # consented resource scopes (short names) and OIDC scopes
    failure: tuple[int, str, int, str, str | None] | None = None  # status, error, code, description, suberror
    issued_at: float = field(default_factory=time.time)


@dataclass
class _AccessToken:
    email: str | None  # None: app-only
    client_id: str | None
    scopes: frozenset[str]  # lower-case short names (delegated scopes or application roles)
    expires_at: float
    grant: _Grant | None = None


@dataclass
class _AuthCode:
    email: str
    client_id: str
    redirect_uri: str
    scopes: tuple[str, ...]
    challenge: str | None
    challenge_method: str
    nonce: str | None
    expires_at: float
    used: bool = False


@dataclass
class _Stored:
    event: dict[str, Any]  # Graph JSON as stored (start/end in the zone they were written in)
    calendar_id: str
    props: dict[str, dict[str, str]] = field(default_factory=dict)  # normalized id -> {"id", "value"}
    start: datetime | None = None
    end: datetime | None = None


def _short_scope(scope: str) -> str:
    """``https://graph.microsoft.com/Calendars.ReadWrite`` → ``Calendars.ReadWrite`` (Graph is the default resource)."""
    for prefix in (GRAPH_RESOURCE + "/", GRAPH_APP_ID + "/"):
        if scope.lower().startswith(prefix.lower()):
            return scope[len(prefix):]
    return scope


def _scopes_of(scope: str | None) -> list[str]:
    out: list[str] = []
    for s in (scope or "").split():
        if s not in out:
            out.append(s)
    return out


class GraphEmulator(EmulatorServer):
    """Microsoft identity platform + Graph calendar on https://127.0.0.1. See the module docstring."""

    default_fault_kinds = frozenset({"api"})

    def __init__(self, start: bool = True, *, host: str = "127.0.0.1", port: int = 0, clock=None,
                 tenant: str = "common", tenant_id: str | None = None, tenant_domain: str = "contoso.onmicrosoft.com",
                 dedupe_transaction_ids: bool = True) -> None:
        cert = tls.make_certificate((host, "localhost") if host != "localhost" else ("localhost", "127.0.0.1"))
        self._tls_files = tls.write_files(cert, owner=self)
        self.ca_file = self._tls_files.ca_file
        self.tenant = tenant
        self.tenant_id = tenant_id or str(uuid.uuid4())
        self.tenant_domain = tenant_domain
        # configuration
        self.dedupe_transaction_ids = dedupe_transaction_ids
        self.max_concurrent_per_mailbox: int | None = 4
        self.requests_per_mailbox_per_window: int | None = 10_000
        self.mailbox_window: float = 600.0
        self.concurrency_retry_after: float | str | None = 1
        self.token_lifetime: int = 3600
        self.code_lifetime: float = 600.0
        self.consent_decision: str = "allow"  # or "deny": redirect with error=access_denied
        self.consent_user: str | None = None
        self.auto_add_users: bool = False
        self.app_permissions: set[str] = {"Calendars.ReadWrite", "User.Read.All"}
        # state
        self._users: dict[str, GraphUser] = {}
        self._by_oid: dict[str, str] = {}
        self._grants: list[_Grant] = []
        self._refresh: dict[str, _Grant] = {}
        self._access: dict[str, _AccessToken] = {}
        self._codes: dict[str, _AuthCode] = {}
        self._events: dict[str, dict[str, _Stored]] = {}  # email -> id -> event (all calendars)
        self._window = SlidingWindow(self.mailbox_window)
        self._in_flight: dict[tuple[str, str], int] = {}
        self._peak: dict[tuple[str, str], int] = {}
        self._id_key = secrets.token_bytes(32)  # signs id_tokens (HS256; MSAL does not verify)
        super().__init__(host=host, port=port, start=start, clock=clock,
                         ssl_context=tls.server_context(self._tls_files))

    # ---- URLs ------------------------------------------------------------------------------

    @property
    def authority_url(self) -> str:
        return f"https://{self.host}:{self.port}"

    @property
    def authority(self) -> str:
        """What ``msal.ClientApplication(authority=...)`` takes: ``authority_url/tenant``."""
        return f"{self.authority_url}/{self.tenant}"

    @property
    def graph_url(self) -> str:
        return f"{self.authority_url}/v1.0"

    @property
    def token_url(self) -> str:
        return f"{self.authority}/oauth2/v2.0/token"

    @property
    def auth_url(self) -> str:
        return f"{self.authority}/oauth2/v2.0/authorize"

    @property
    def openid_configuration_url(self) -> str:
        return f"{self.authority}/v2.0/.well-known/openid-configuration"

    def session(self) -> requests.Session:
        """A ``requests.Session`` that trusts the emulator's CA for the emulator's origin, whatever the env says.

        ``session.verify = emu.ca_file`` alone is not enough where ``REQUESTS_CA_BUNDLE`` or
        ``CURL_CA_BUNDLE`` is set (as on this project's machines): requests'
        ``merge_environment_settings`` puts the env bundle in place of a per-request ``verify=None``,
        and that beats ``Session.verify``, so the handshake fails with CERTIFICATE_VERIFY_FAILED. Either
        set ``session.trust_env = False`` as well, pass ``verify=`` per request, or use this session,
        whose adapter for ``authority_url`` pins ``verify`` to ``ca_file``. Pass it to MSAL as
        ``http_client=``.
        """
        http = requests.Session()
        http.verify = self.ca_file
        http.mount(self.authority_url + "/", _PinnedCAAdapter(self.ca_file))
        return http

    # ---- users, clients, tokens ------------------------------------------------------------

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
            grant = _Grant(user.email, client_id, scopes_t)
            self._grants.append(grant)
            rt = refresh_token or self._new_refresh_string()
            self._refresh[rt] = grant
            return rt

    def set_licensed(self, email: str, licensed: bool) -> None:
        with self.lock:
            self._user(email).licensed = licensed

    def add_calendar(self, email: str, name: str) -> str:
        with self.lock:
            user = self._user(email)
            cal_id = self._new_outlook_id()
            user.calendars[cal_id] = name
            return cal_id

    def issue_refresh_token(self, email: str, scopes: tuple[str, ...] = DEFAULT_SCOPES,
                            client_id: str | None = None) -> str:
        with self.lock:
            return self.add_user(email, self._user(email).licensed, scopes=scopes, client_id=client_id)

    def access_token_for(self, email: str | None, scopes: tuple[str, ...] = ("Calendars.ReadWrite", "User.Read"),
                         client_id: str | None = "emulator-client") -> str:
        """A live access token for raw-HTTP tests; ``email=None`` gives an app-only token with ``scopes`` as roles."""
        with self.lock:
            if email is not None:
                email = self._user(email).email
            return self._new_access(email, client_id, scopes, None)

    def revoke(self, token_or_email: str, code: int = 50173) -> int:
        """Revoke grants (by refresh token, or every grant of a user); their access tokens die too.

        Answers ``invalid_grant`` with ``code`` (50173: "The provided grant has expired due to it being
        revoked..."; e.g. 50132/50133 for other revocations). Returns how many grants were hit.
        """
        desc = {
            50173: "The provided grant has expired due to it being revoked, a fresh auth token is needed. The user "
                   "might have changed or reset their password. The grant was issued on '{issued}' and the "
                   "TokensValidFrom date (before which tokens are not valid) for this user is '{now}'.",
        }.get(code, "The session has been revoked. The user must sign in again.")
        with self.lock:
            grants = self._fail_grants(token_or_email, (400, "invalid_grant", code, desc, None))
            for tok, at in list(self._access.items()):
                if any(at.grant is g for g in grants):
                    del self._access[tok]
            return len(grants)

    def expire_refresh(self, token_or_email: str) -> int:
        """The refresh token expired (inactivity): ``invalid_grant`` AADSTS700082."""
        return len(self._fail_grants(token_or_email, (
            400, "invalid_grant", 700082,
            "The refresh token has expired due to inactivity. The token was issued on {issued} and was inactive "
            "for 90.00:00:00.", None)))

    def require_interaction(self, email: str, code: int = 50076) -> int:
        """Conditional access / MFA now required: ``interaction_required`` (suberror ``basic_action``)."""
        return len(self._fail_grants(email, (
            400, "interaction_required", code,
            "Due to a configuration change made by your administrator, or because you moved to a new location, "
            f"you must use multi-factor authentication to access '{GRAPH_APP_ID}'.", "basic_action")))

    def remove_consent(self, email: str) -> int:
        """The user or an admin removed the app's consent: ``invalid_grant`` AADSTS65001."""
        return len(self._fail_grants(email, (
            400, "invalid_grant", 65001,
            "The user or administrator has not consented to use the application with ID '{client}'. Send an "
            "interactive authorization request for this user and resource.", "consent_required")))

    def expire_access_tokens(self, email: str | None = None, caches: tuple[Any, ...] | list[Any] = ()) -> None:
        """Access tokens stop working here (Graph 401) and in the given msal token caches (marked expired)."""
        with self.lock:
            target = self._user(email) if email is not None else None
            home = f"{target.oid}.{self.tenant_id}" if target is not None else None
            for tok, at in list(self._access.items()):
                if target is None or at.email == target.email:
                    del self._access[tok]
        for cache in caches:
            kind = cache.CredentialType.ACCESS_TOKEN
            for entry in list(cache.search(kind)):
                if home is None or entry.get("home_account_id") == home:
                    cache.modify(kind, entry, {"expires_on": "0", "extended_expires_on": "0", "refresh_on": "0"})

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
            self._apply(stored, copy.deepcopy(changes), creating=False)
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

    # ---- throttling inspection -------------------------------------------------------------

    def max_in_flight(self, email: str) -> int:
        """Highest number of concurrent requests ever attempted for the mailbox (any app)."""
        with self.lock:
            email = self._canonical_mailbox(email)
            return max((n for (_, mb), n in self._peak.items() if mb == email), default=0)

    def in_flight(self, email: str) -> int:
        with self.lock:
            email = self._canonical_mailbox(email)
            return sum(n for (_, mb), n in self._in_flight.items() if mb == email)

    def window_used(self, email: str) -> int:
        """Admitted requests for the mailbox (all apps) in the current window."""
        with self.lock:
            email = self._canonical_mailbox(email)
            now = self.clock()
            self._window.window = self.mailbox_window
            keys = {k for k in self._window.keys() if k.endswith("|" + email)}
            return sum(self._window.used(k, now) for k in keys)

    def reset_throttling(self) -> None:
        with self.lock:
            self._window.clear()
            self._peak.clear()

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

    @staticmethod
    def _new_refresh_string() -> str:
        return "1.AXkA" + secrets.token_urlsafe(48)

    def _new_access(self, email: str | None, client_id: str | None, scopes: tuple[str, ...] | list[str],
                    grant: _Grant | None) -> str:
        tok = "eyJ0eXAiOiJKV1QiLCJhbGciOiJub25lIn0.emu-graph." + secrets.token_urlsafe(32)
        short = frozenset(_short_scope(s).lower() for s in scopes)
        self._access[tok] = _AccessToken(email, client_id, short, self.clock() + self.token_lifetime, grant)
        return tok

    def _fail_grants(self, token_or_email: str, failure: tuple[int, str, int, str, str | None]) -> list[_Grant]:
        with self.lock:
            grant = self._refresh.get(token_or_email)
            if grant is not None:
                targets = [grant]
            else:
                email = self._user(token_or_email).email
                targets = [g for g in self._grants if g.email == email]
            for g in targets:
                g.failure = failure
            return targets

    def _bearer(self, req: Request) -> _AccessToken | None:
        auth = req.headers.get("authorization", "")
        if not auth.lower().startswith("bearer "):
            return None
        at = self._access.get(auth[7:].strip())
        if at is None or at.expires_at <= self.clock():
            return None
        return at

    def _touch(self, stored: _Stored) -> None:
        stored.event["changeKey"] = _b64url(secrets.token_bytes(15)) + "=="
        stored.event["lastModifiedDateTime"] = _now_iso()

    def _inspect(self, stored: _Stored) -> dict[str, Any]:
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

    def _mailbox_for(self, rest: list[str], at: _AccessToken) -> str | None:
        if rest[:1] == ["users"] and len(rest) >= 2:
            user = self._find_user(rest[1])
            return user.email if user else rest[1].lower()
        return at.email

    def _process(self, req: Request) -> tuple[Response | None, Fault | None]:
        # Concurrency is counted from arrival, so classify (cheap: path + token) before the base
        # class sleeps ``latency``; a request over the limit is answered at once and logged here.
        try:
            self.classify(req)
        except Exception:  # noqa: BLE001 - an emulator bug must be visible
            self.internal_errors.append(traceback.format_exc())
        key = (req.info.get("app_id") or "", req.account) if req.kind in ("api", "batch") and req.account else None
        if key is not None:
            with self.lock:
                n = self._in_flight.get(key, 0) + 1
                self._peak[key] = max(self._peak.get(key, 0), n)
                limit = self.max_concurrent_per_mailbox
                over = limit is not None and n > limit
                if not over:
                    self._in_flight[key] = n
            if over:
                headers = {}
                if self.concurrency_retry_after is not None:
                    headers["Retry-After"] = _fmt_retry_after(self.concurrency_retry_after)
                req.info["throttled"] = "MailboxConcurrency"
                resp = self._graph_response(GraphError(429, "ApplicationThrottled",
                                                       "Application is over its MailboxConcurrency limit.", headers))
                self._record(req, resp, None)
                return resp, None
        try:
            return super()._process(req)
        finally:
            if key is not None:
                with self.lock:
                    self._in_flight[key] -= 1

    def route(self, req: Request) -> Response:
        try:
            if req.kind in ("api", "batch"):
                return self._api(req)
            seg = req.segments()
            if req.kind in ("discovery", "token", "consent"):
                self._check_tenant(seg[0], page=req.kind == "consent")
                if req.kind == "discovery":
                    return self._discovery(req, seg)
                if req.kind == "token":
                    return self._token_endpoint(req, seg[0])
                return self._authorize(req, seg[0])
            raise GraphError(404, "NotFound", f"No emulated endpoint at {req.path}. Graph lives under /v1.0, the "
                                              "identity platform under /{tenant}/oauth2/v2.0/ and "
                                              "/{tenant}/v2.0/.well-known/openid-configuration.")
        except GraphError as e:
            return self._graph_response(e)
        except AadError as e:
            return self._aad_response(e, req)

    def error_response(self, req: Request, status: int, reason: str | None, message: str | None,
                       retry_after: float | str | None = None) -> Response:
        headers = {"Retry-After": _fmt_retry_after(retry_after)} if retry_after is not None else {}
        if req.kind in ("token", "consent", "discovery"):
            error = reason or {400: "invalid_grant", 401: "invalid_client", 429: "temporarily_unavailable",
                               503: "temporarily_unavailable"}.get(status, "server_error")
            code = {400: 9002313, 401: 7000215, 429: 90024, 503: 90024}.get(status, 90033)
            resp = self._aad_response(AadError(status, error, code, message or "Injected failure."), req)
        else:
            code_default, message_default = _GRAPH_DEFAULTS.get(status, ("UnknownError", "Error."))
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

    def _aad_response(self, e: AadError, req: Request) -> Response:
        ts = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        trace, corr = str(uuid.uuid4()), str(uuid.uuid4())
        desc = f"AADSTS{e.code}: {e.description} Trace ID: {trace} Correlation ID: {corr} Timestamp: {ts}"
        if e.page:
            page = (f"<!doctype html><title>Sign in to your account</title><h1>Sorry, but we're having trouble "
                    f"signing you in.</h1><p>{html.escape(desc)}</p>")
            return Response.text(e.status, page)
        body: dict[str, Any] = {"error": e.error, "error_description": desc, "error_codes": [e.code],
                                "timestamp": ts, "trace_id": trace, "correlation_id": corr,
                                "error_uri": f"{self.authority_url}/error?code={e.code}"}
        if e.suberror:
            body["suberror"] = e.suberror
        return Response.json(e.status, body, {"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"})

    # ---- identity platform -----------------------------------------------------------------

    def _check_tenant(self, tenant: str, page: bool = False) -> None:
        known = {*_GENERIC_TENANTS, self.tenant.lower(), self.tenant_id.lower(), self.tenant_domain.lower()}
        if tenant.lower() not in known:
            raise AadError(400, "invalid_tenant", 90002,
                           f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are "
                           "signing into the correct cloud.", page=page)

    def _discovery(self, req: Request, seg: list[str]) -> Response:
        tenant = seg[0]
        base = f"{self.authority_url}/{tenant}"
        if seg[1:] == ["discovery", "v2.0", "keys"]:
            return Response.json(200, {"keys": []})
        generic = tenant.lower() in _GENERIC_TENANTS
        issuer_tenant = "{tenantid}" if generic else self.tenant_id
        return Response.json(200, {
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "jwks_uri": f"{base}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": f"{self.authority_url}/{issuer_tenant}/v2.0",
            "request_uri_parameter_supported": False,
            "userinfo_endpoint": f"{self.graph_url.rsplit('/', 1)[0]}/oidc/userinfo",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "http_logout_supported": True,
            "frontchannel_logout_supported": True,
            "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
            "claims_supported": ["sub", "iss", "cloud_instance_name", "cloud_instance_host_name",
                                 "cloud_graph_host_name", "msgraph_host", "aud", "exp", "iat", "auth_time", "acr",
                                 "nonce", "preferred_username", "name", "tid", "ver", "at_hash", "c_hash", "email"],
            "kerberos_endpoint": f"{base}/kerberos",
            "tenant_region_scope": "EU",
            "cloud_instance_name": "microsoftonline.com",
            "cloud_graph_host_name": "graph.windows.net",
            "msgraph_host": f"{self.host}:{self.port}",
            "rbac_url": "https://pas.windows.net",
        })

    def _client_from(self, req: Request, form: dict[str, str]) -> tuple[str | None, str | None]:
        client_id, secret = form.get("client_id"), form.get("client_secret")
        basic = req.headers.get("authorization", "")
        if basic.lower().startswith("basic "):
            try:
                cid, _, sec = base64.b64decode(basic[6:]).decode().partition(":")
            except ValueError:
                raise AadError(401, "invalid_client", 7000215, "Invalid client secret provided.") from None
            client_id, secret = unquote(cid), unquote(sec)
        return client_id, secret

    def _check_client(self, client_id: str | None, secret: str | None, tenant: str) -> None:
        if not client_id:
            raise AadError(400, "invalid_request", 900144,
                           "The request body must contain the following parameter: 'client_id'.")
        if not self.clients:
            return
        client = self.clients.get(client_id)
        if client is None:
            raise AadError(400, "unauthorized_client", 700016,
                           f"Application with identifier '{client_id}' was not found in the directory '{tenant}'. "
                           "This can happen if the application has not been installed by the administrator of the "
                           "tenant or consented to by any user in the tenant.")
        if client.get("secret") is not None:
            if not secret:
                raise AadError(401, "invalid_client", 7000218,
                               "The request body must contain the following parameter: 'client_assertion' or "
                               "'client_secret'.")
            if not hmac.compare_digest(secret, client["secret"]):
                raise AadError(401, "invalid_client", 7000215,
                               "Invalid client secret provided. Ensure the secret being sent in the request is the "
                               f"client secret value, not the client secret ID, for a secret added to app "
                               f"'{client_id}'.")

    def _token_endpoint(self, req: Request, tenant: str) -> Response:
        if req.method != "POST":
            raise AadError(400, "invalid_request", 900561,
                           f"The endpoint only accepts POST requests. Received a {req.method} request.")
        form = req.form()
        grant_type = form.get("grant_type")
        client_id, secret = self._client_from(req, form)
        req.info.update(grant_type=grant_type, app_id=client_id)
        with self.lock:
            self._check_client(client_id, secret, tenant)
            if grant_type == "refresh_token":
                return self._refresh_grant(req, form, client_id)
            if grant_type == "authorization_code":
                return self._code_grant(req, form, client_id)
            if grant_type == "client_credentials":
                return self._client_credentials(req, form, client_id, tenant)
        if not grant_type:
            raise AadError(400, "invalid_request", 900144,
                           "The request body must contain the following parameter: 'grant_type'.")
        raise AadError(400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type "
                                                             f"'{grant_type}'.")

    def _raise_failure(self, grant: _Grant, client_id: str | None) -> None:
        if grant.failure is None:
            return
        status, error, code, desc, suberror = grant.failure
        issued = datetime.fromtimestamp(grant.issued_at, UTC).strftime("%Y-%m-%dT%H:%M:%S.0000000Z")
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.0000000Z")
        raise AadError(status, error, code, desc.format(issued=issued, now=now, client=client_id or ""), suberror)

    def _wanted_scopes(self, form: dict[str, str], grant: _Grant) -> list[str]:
        wanted = _scopes_of(form.get("scope"))
        consented = {_short_scope(s).lower() for s in grant.scopes} | OIDC_SCOPES
        out = []
        for s in wanted:
            short = _short_scope(s)
            if short.lower() == ".default":
                out.extend(x for x in grant.scopes if x not in out)
                continue
            if short.lower() not in consented:
                raise AadError(400, "invalid_grant", 65001,
                               f"The user or administrator has not consented to use the application with ID "
                               f"'{form.get('client_id') or ''}'. Send an interactive authorization request for this "
                               "user and resource.", "consent_required")
            out.append(s)
        return out or list(grant.scopes)

    def _tokens(self, grant: _Grant, client_id: str | None, scopes: list[str], form: dict[str, str],
                nonce: str | None = None, refresh: bool = True) -> dict[str, Any]:
        user = self._users[grant.email]
        resource = [s for s in scopes if s.lower() not in OIDC_SCOPES]
        out: dict[str, Any] = {
            "token_type": "Bearer", "scope": " ".join(scopes),
            "expires_in": self.token_lifetime, "ext_expires_in": self.token_lifetime,
            "access_token": self._new_access(user.email, client_id, resource, grant),
        }
        if refresh and "offline_access" in {s.lower() for s in scopes}:
            rt = self._new_refresh_string()
            self._refresh[rt] = grant
            out["refresh_token"] = rt
        if "openid" in {s.lower() for s in scopes}:
            out["id_token"] = self._id_token(user, client_id or "", nonce)
        if form.get("client_info") == "1":
            out["client_info"] = _b64url(json.dumps({"uid": user.oid, "utid": self.tenant_id}).encode())
        return out

    def _id_token(self, user: GraphUser, client_id: str, nonce: str | None) -> str:
        now = int(time.time())  # MSAL compares id_token times with the wall clock
        claims: dict[str, Any] = {
            "aud": client_id, "iss": f"{self.authority_url}/{self.tenant_id}/v2.0", "iat": now, "nbf": now,
            "exp": now + 3600, "name": user.display_name, "oid": user.oid, "preferred_username": user.email,
            "rh": "0.emu", "sub": _b64url(hashlib.sha256(f"{user.oid}|{client_id}".encode()).digest()[:32]),
            "tid": self.tenant_id, "uti": _b64url(secrets.token_bytes(16)), "ver": "2.0",
        }
        if nonce is not None:
            claims["nonce"] = nonce
        header = _b64url(json.dumps({"typ": "JWT", "alg": "HS256", "kid": "emu"}).encode())
        payload = _b64url(json.dumps(claims).encode())
        sig = _b64url(hmac.new(self._id_key, f"{header}.{payload}".encode(), hashlib.sha256).digest())
        return f"{header}.{payload}.{sig}"

    def _refresh_grant(self, req: Request, form: dict[str, str], client_id: str | None) -> Response:
        rt = form.get("refresh_token")
        if not rt:
            raise AadError(400, "invalid_request", 900144,
                           "The request body must contain the following parameter: 'refresh_token'.")
        grant = self._refresh.get(rt)
        if grant is None:
            raise AadError(400, "invalid_grant", 9002313, "Invalid request. Request is malformed or invalid.")
        req.account = grant.email
        if grant.client_id is not None and grant.client_id != client_id:
            raise AadError(400, "invalid_grant", 70000, "The provided grant is invalid or malformed: it was issued "
                                                        "to another client.")
        self._raise_failure(grant, client_id)
        scopes = self._wanted_scopes(form, grant)
        return Response.json(200, self._tokens(grant, client_id, scopes, form), {"Cache-Control": "no-store, no-cache"})

    def _code_grant(self, req: Request, form: dict[str, str], client_id: str | None) -> Response:
        code = self._codes.get(form.get("code") or "")
        if code is None:
            raise AadError(400, "invalid_grant", 9002313, "Invalid request. Request is malformed or invalid.")
        req.account = code.email
        if code.used:
            raise AadError(400, "invalid_grant", 54005, "OAuth2 Authorization code was already redeemed, please "
                                                        "retry with a new valid code or use an existing refresh token.")
        if code.expires_at <= self.clock():
            raise AadError(400, "invalid_grant", 70008, "The provided authorization code or refresh token has "
                                                        "expired due to inactivity. Send a new interactive "
                                                        "authorization request for this user and resource.")
        if client_id != code.client_id:
            raise AadError(400, "invalid_grant", 70000, "The provided grant is invalid or malformed: the code was "
                                                        "issued to another client.")
        if form.get("redirect_uri") != code.redirect_uri:
            raise AadError(400, "invalid_grant", 500112,
                           f"The reply address '{form.get('redirect_uri')}' does not match the reply address "
                           f"'{code.redirect_uri}' provided when requesting Authorization code.")
        if code.challenge is not None:
            if not pkce_matches(form.get("code_verifier"), code.challenge, code.challenge_method):
                raise AadError(400, "invalid_grant", 50148, "The code_verifier does not match the code_challenge "
                                                            "supplied in the authorization request for PKCE.")
        code.used = True
        grant = _Grant(code.email, code.client_id, code.scopes)
        self._grants.append(grant)
        return Response.json(200, self._tokens(grant, client_id, list(code.scopes), form, nonce=code.nonce),
                             {"Cache-Control": "no-store, no-cache"})

    def _client_credentials(self, req: Request, form: dict[str, str], client_id: str | None,
                            tenant: str) -> Response:
        scopes = _scopes_of(form.get("scope"))
        if len(scopes) != 1 or not scopes[0].endswith("/.default"):
            raise AadError(400, "invalid_scope", 1002012,
                           f"The provided value for scope {' '.join(scopes)} is not valid. Client credential flows "
                           "must have a scope value with /.default suffixed to the resource identifier "
                           "(application ID URI).")
        resource = scopes[0][: -len("/.default")]
        if resource.rstrip("/").lower() not in (GRAPH_RESOURCE, GRAPH_APP_ID):
            raise AadError(400, "invalid_resource", 500011,
                           f"The resource principal named {resource} was not found in the tenant named {tenant}.")
        if tenant.lower() in _GENERIC_TENANTS:
            raise AadError(400, "invalid_request", 50059,
                           "No tenant-identifying information found in either the request or implied by any "
                           "provided credentials.")
        out = {"token_type": "Bearer", "expires_in": self.token_lifetime, "ext_expires_in": self.token_lifetime,
               "access_token": self._new_access(None, client_id, tuple(self.app_permissions), None)}
        return Response.json(200, out, {"Cache-Control": "no-store, no-cache"})

    def _authorize(self, req: Request, tenant: str) -> Response:
        p = {k: req.param(k) for k in ("client_id", "redirect_uri", "response_type", "scope", "state", "nonce",
                                       "code_challenge", "code_challenge_method", "login_hint", "prompt",
                                       "client_info", "response_mode")}
        for name in ("client_id", "response_type", "scope"):
            if not p[name]:
                raise AadError(400, "invalid_request", 900144,
                               f"The request body must contain the following parameter: '{name}'.", page=True)
        with self.lock:
            client = self.clients.get(p["client_id"] or "")
            if self.clients and client is None:
                raise AadError(400, "unauthorized_client", 700016,
                               f"Application with identifier '{p['client_id']}' was not found in the directory "
                               f"'{tenant}'.", page=True)
            redirect = p["redirect_uri"]
            if not redirect:
                raise AadError(400, "invalid_request", 900971, "No reply address provided.", page=True)
            uris = client.get("redirect_uris") if client else None
            if uris is not None and redirect not in uris:
                raise AadError(400, "invalid_request", 50011,
                               f"The redirect URI '{redirect}' specified in the request does not match the redirect "
                               f"URIs configured for the application '{p['client_id']}'.", page=True)
            mode = p["response_mode"] or "query"

            def back(**params: str | None) -> Response:
                params = {k: v for k, v in params.items() if v is not None}
                if mode == "form_post":
                    inputs = "".join(f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}"/>'
                                     for k, v in params.items())
                    return Response.text(200, f'<html><body onload="document.forms[0].submit()"><form method="POST" '
                                              f'action="{html.escape(redirect)}">{inputs}</form></body></html>')
                sep = "#" if mode == "fragment" else ("&" if urlsplit(redirect).query else "?")
                return Response.redirect(redirect + sep + urlencode(params))

            if p["response_type"] != "code":
                return back(error="unsupported_response_type",
                            error_description="AADSTS70005: response_type is not supported.", state=p["state"])
            method = p["code_challenge_method"] or "plain"
            if p["code_challenge"] and method not in ("S256", "plain"):
                raise AadError(400, "invalid_request", 501491, "Invalid code_challenge_method.", page=True)
            email = (p["login_hint"] or self.consent_user or next(iter(self._users), None) or "").lower()
            if not email:
                raise AadError(400, "invalid_request", 50034, "No emulated user; call add_user() first.", page=True)
            if email not in self._users:
                if not self.auto_add_users:
                    raise AadError(400, "invalid_request", 50034,
                                   f"The user account {email} does not exist in the '{tenant}' directory. To sign "
                                   "into this application, the account must be added to the directory.", page=True)
                self._ensure_user(email)
            req.account = email
            req.info.update(pkce=method if p["code_challenge"] else None, scope=p["scope"], app_id=p["client_id"])
            if self.consent_decision != "allow":
                return back(error="access_denied", error_description="AADSTS65004: User declined to consent to "
                                                                     "access the app.", state=p["state"])
            scopes = tuple(_scopes_of(p["scope"]))
            code = "0.AXkA" + secrets.token_urlsafe(64)
            self._codes[code] = _AuthCode(
                email=email, client_id=p["client_id"] or "", redirect_uri=redirect, scopes=scopes,
                challenge=p["code_challenge"], challenge_method=method, nonce=p["nonce"],
                expires_at=self.clock() + self.code_lifetime)
            user = self._users[email]
            client_info = _b64url(json.dumps({"uid": user.oid, "utid": self.tenant_id}).encode()) \
                if p["client_info"] == "1" else None
            return back(code=code, client_info=client_info, state=p["state"], session_state=str(uuid.uuid4()))

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

    def _dispatch(self, req: Request, seg: list[str], at: _AccessToken) -> Response:
        with self.lock:
            user, rest = self._owner(req, seg, at)
            op, calendar_id, event_id = self._match(rest, req.method, user)
            req.info.update(op=op, calendar_id=calendar_id, event_id=event_id)
            self._check_scope(op, at)
            if op not in ("user.get",) and not user.licensed:
                raise GraphError(404, "MailboxNotEnabledForRESTAPI",
                                 "The mailbox is either inactive, soft-deleted, or is hosted on-premise.")
            self._admit(req, at, user)
            handler = getattr(self, "_op_" + op.replace(".", "_"))
            return handler(req, user, calendar_id, event_id)

    def _owner(self, req: Request, seg: list[str], at: _AccessToken) -> tuple[GraphUser, list[str]]:
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

    def _check_scope(self, op: str, at: _AccessToken) -> None:
        if op == "user.get":
            needed = _USER_SCOPES
        elif op in ("events.create", "events.update", "events.delete"):
            needed = _WRITE_SCOPES
        else:
            needed = _READ_SCOPES
        if not needed & at.scopes:
            raise GraphError(403, "ErrorAccessDenied", "Access is denied. Check credentials and try again.")

    def _admit(self, req: Request, at: _AccessToken, user: GraphUser) -> None:
        now = self.clock()
        w = self._window
        w.window = self.mailbox_window
        key = f"{at.client_id or ''}|{user.email}"
        if w.would_exceed(key, self.requests_per_mailbox_per_window, now):
            req.info["throttled"] = "MailboxRequests"
            raise GraphError(429, "ApplicationThrottled", "Application is over its MailboxRequests limit.",
                             {"Retry-After": str(w.seconds_until_free(key, now))})
        w.add(key, now)

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

    def _stored(self, user: GraphUser, event_id: str, calendar_id: str | None) -> _Stored:
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

    def _create(self, user: GraphUser, calendar_id: str, body: dict[str, Any]) -> _Stored:
        now = _now_iso()
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
            "start": {"dateTime": _fmt_local(datetime(2000, 1, 1)), "timeZone": "UTC"},
            "end": {"dateTime": _fmt_local(datetime(2000, 1, 1)), "timeZone": "UTC"},
            "location": _default_location(), "locations": [], "attendees": [],
            "organizer": {"emailAddress": {"name": user.display_name, "address": user.email}},
        }
        stored = _Stored(ev, calendar_id)
        self._apply(stored, body, creating=True)
        self._touch(stored)
        self._events[user.email][eid] = stored
        return stored

    def _apply(self, stored: _Stored, body: dict[str, Any], *, creating: bool) -> None:
        """Top-level properties replace; extended properties upsert; read-only properties are ignored."""
        ev = stored.event
        writable = {k: v for k, v in body.items() if "@" not in k and EVENT_TYPE.props.get(k, "x") != RO}
        if not creating and "transactionId" in writable and writable["transactionId"] != ev.get("transactionId"):
            raise GraphError(400, "ErrorInvalidRequest", "The transactionId of an event cannot be changed after "
                                                         "it is created.")
        props = writable.pop("singleValueExtendedProperties", None) or []
        normalized = []
        for p in props:
            if not isinstance(p, dict) or not isinstance(p.get("id"), str) or not isinstance(p.get("value"), str):
                raise GraphError(400, "ErrorInvalidProperty", "Each single-value extended property needs a string "
                                                              "'id' and a string 'value'.")
            normalized.append((normalize_prop_id(p["id"]), p["value"]))
        writable.pop("multiValueExtendedProperties", None)
        times = {}
        for key in ("start", "end"):
            if key in writable:
                times[key] = self._parse_dttz(writable[key], key)
        start = times.get("start", stored.start)
        end = times.get("end", stored.end)
        if start is not None and end is not None and end < start:
            raise GraphError(400, "ErrorCalendarEndDateIsEarlierThanStartDate", "The end date occurs before the "
                                                                                 "start date.")
        # all checks passed: apply
        for k, v in writable.items():
            if k in ("start", "end"):
                continue
            if v is None:
                ev[k] = _default_location() if k == "location" else ([] if k in ("locations", "attendees",
                                                                                 "categories") else None)
            else:
                ev[k] = copy.deepcopy(v)
        for key, (instant, zone_name) in times.items():
            stored_key = "start" if key == "start" else "end"
            local = instant.astimezone(_zone(zone_name)).replace(tzinfo=None)
            ev[stored_key] = {"dateTime": _fmt_local(local), "timeZone": zone_name}
            ev["originalStartTimeZone" if key == "start" else "originalEndTimeZone"] = zone_name
            setattr(stored, key, instant)
        if "location" in writable:
            loc = writable["location"]
            if loc:
                full = _default_location()
                full.update(copy.deepcopy(loc))
                if full.get("displayName") and "uniqueId" not in loc:
                    full.update(uniqueId=full["displayName"], uniqueIdType="private")
                ev["location"] = full
                ev["locations"] = [copy.deepcopy(full)] if full.get("displayName") else []
            else:
                ev["location"], ev["locations"] = _default_location(), []
        elif "locations" in writable:
            locs = writable["locations"] or []
            ev["location"] = copy.deepcopy(locs[0]) if locs else _default_location()
        if "body" in writable:
            b = writable["body"] or {}
            ctype = (b.get("contentType") or "text").lower()
            content = b.get("content") or ""
            if ctype == "html" and content and not content.lstrip().lower().startswith("<html"):
                content = ("<html><head>\r\n<meta http-equiv=\"Content-Type\" content=\"text/html; charset=utf-8\">"
                           f"\r\n</head>\r\n<body>\r\n{content}\r\n</body>\r\n</html>\r\n")
            ev["body"] = {"contentType": ctype, "content": content}
            text = re.sub(r"<(head|style|script)[^>]*>.*?</\1>", " ", content, flags=re.S | re.I)
            text = html.unescape(re.sub(r"<[^>]+>", " ", text))
            ev["bodyPreview"] = " ".join(text.split())[:255]
        if writable.get("isOnlineMeeting") and not ev.get("onlineMeeting"):
            if ev.get("onlineMeetingProvider") in (None, "unknown"):
                ev["onlineMeetingProvider"] = "teamsForBusiness"
            ev["onlineMeeting"] = {"joinUrl": "https://teams.microsoft.com/l/meetup-join/19%3ameeting_"
                                              + secrets.token_urlsafe(24) + "%40thread.v2/0"}
        if "transactionId" in writable and writable["transactionId"] is None:
            ev.pop("transactionId", None)
        for pid, value in normalized:
            stored.props[pid] = {"id": pid, "value": value}

    def _parse_dttz(self, value: Any, key: str) -> tuple[datetime, str]:
        if not isinstance(value, dict) or not value.get("dateTime"):
            raise GraphError(400, "ErrorInvalidRequest", f"The '{key}' property requires a 'dateTime'.")
        zone_name = value.get("timeZone") or "UTC"
        zone = _zone(zone_name)
        if zone is None:
            raise GraphError(400, "TimeZoneNotSupportedException",
                             f"A valid TimeZone value must be specified. The following TimeZone value is not "
                             f"supported: '{zone_name}'.")
        try:
            dt = _parse_local(value["dateTime"])
        except ValueError:
            raise GraphError(400, "RequestBodyRead", f"Cannot convert the literal '{value['dateTime']}' to the "
                                                     "expected type 'Edm.DateTimeOffset'.") from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=zone)
        return dt, zone_name

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
        self._apply(stored, body, creating=False)
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
            m = _ANY_FILTER_RE.match(flt)
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
        if m and _zone(m.group(1)) is not None:
            return m.group(1)
        return None

    def _render(self, req: Request, user: GraphUser, stored: _Stored, zone_name: str | None) -> dict[str, Any]:
        ev = copy.deepcopy(stored.event)
        ev["@odata.etag"] = f'W/"{ev["changeKey"]}"'
        if zone_name is not None:
            zone = _zone(zone_name)
            for key, instant in (("start", stored.start), ("end", stored.end)):
                if instant is not None:
                    ev[key] = {"dateTime": _fmt_local(instant.astimezone(zone).replace(tzinfo=None)),
                               "timeZone": zone_name}
        expand = req.param("$expand")
        if expand:
            m = _EXPAND_RE.match(expand)
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

    def _event_response(self, req: Request, user: GraphUser, stored: _Stored, status: int,
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

    # -- $batch

    def _batch(self, req: Request, at: _AccessToken) -> Response:
        try:
            payload = json.loads(req.body.decode("utf-8")) if req.body else None
        except (ValueError, UnicodeDecodeError):
            payload = None
        items = payload.get("requests") if isinstance(payload, dict) else None
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise GraphError(400, "BadRequest", "Invalid batch payload format.")
        if len(items) > MAX_BATCH:
            raise GraphError(400, "BadRequest", f"Number of batch requests exceeds the limit of {MAX_BATCH}.")
        ids = [str(i.get("id", "")) for i in items]
        if any(not i for i in ids) or len(set(ids)) != len(ids):
            raise GraphError(400, "BadRequest", "Each batch request needs a unique 'id'.")
        req.info.update(op="$batch", items=len(items))
        results: dict[str, Response] = {}
        pending = list(items)
        while pending:
            progressed = False
            for item in list(pending):
                deps = [str(d) for d in (item.get("dependsOn") or [])]
                if any(d not in ids for d in deps):
                    raise GraphError(400, "BadRequest", f"dependsOn of request '{item['id']}' names an unknown id.")
                if not all(d in results for d in deps):
                    continue
                pending.remove(item)
                progressed = True
                if any(results[d].status >= 400 for d in deps):
                    results[str(item["id"])] = self._graph_response(GraphError(
                        424, "FailedDependency", "A request this request depends on failed."))
                    continue
                results[str(item["id"])] = self._batch_item(req, item, at)
            if not progressed:
                raise GraphError(400, "BadRequest", "dependsOn contains a cycle.")
        responses = []
        for rid in ids:
            r = results[rid]
            body: Any = None
            if r.body:
                try:
                    body = json.loads(r.body)
                except ValueError:
                    body = base64.b64encode(r.body).decode()
            entry: dict[str, Any] = {"id": rid, "status": r.status, "headers": dict(r.headers)}
            if body is not None:
                entry["body"] = body
            responses.append(entry)
        return Response.json(200, {"responses": responses})

    def _batch_item(self, outer: Request, item: dict[str, Any], at: _AccessToken) -> Response:
        url = str(item.get("url") or "")
        if url.startswith(("http://", "https://")) or not url:
            return self._graph_response(GraphError(400, "BadRequest", "Batch request urls must be relative."))
        raw = "/v1.0" + (url if url.startswith("/") else "/" + url)
        split = urlsplit(raw)
        headers = {k.lower(): str(v) for k, v in (item.get("headers") or {}).items()}
        headers["authorization"] = outer.headers.get("authorization", "")
        body = item.get("body")
        if body is not None and "content-type" not in headers:
            return self._graph_response(GraphError(400, "BadRequest", "Content-Type header is required when a "
                                                                      "batch request has a body."))
        sub = Request(method=str(item.get("method", "GET")).upper(), path=unquote(split.path), raw_path=raw,
                      query=parse_qs(split.query, keep_blank_values=True), headers=headers,
                      body=json.dumps(body).encode() if body is not None else b"")
        sub.kind = "api"
        sub.info["batch_id"] = str(item["id"])
        sub.info["app_id"] = at.client_id
        mailbox = self._mailbox_for(sub.segments()[1:], at)
        if mailbox:
            sub.account = sub.info["mailbox"] = mailbox
        fault = self._take_item_fault(sub)
        if fault is not None:
            resp = self._fault_response(sub, fault)
        else:
            try:
                resp = self._dispatch(sub, sub.segments()[1:], at)
            except GraphError as e:
                resp = self._graph_response(e)
            except Exception:  # noqa: BLE001 - emulator bug: visible, answered 500
                self.internal_errors.append(traceback.format_exc())
                resp = self._graph_response(GraphError(500, "InternalServerError", "Emulator internal error."))
        self._record(sub, resp, fault)
        return resp

    def _take_item_fault(self, sub: Request) -> Fault | None:
        """Only "fail" faults apply inside a batch (lost responses and timeouts concern the HTTP request)."""
        with self.lock:
            for i, fault in enumerate(self._faults):
                if fault.kind == "fail" and fault.matches(sub, True):
                    return self._faults.pop(i)
        return None


class _PinnedCAAdapter(requests.adapters.HTTPAdapter):
    def __init__(self, ca_file: str) -> None:
        super().__init__()
        self.ca_file = ca_file

    def send(self, request, **kwargs):  # type: ignore[no-untyped-def]
        kwargs["verify"] = self.ca_file
        return super().send(request, **kwargs)


def _default_location() -> dict[str, Any]:
    return {"displayName": "", "locationType": "default", "uniqueIdType": "unknown", "address": {},
            "coordinates": {}}
