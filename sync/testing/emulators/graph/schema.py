"""What a Graph event body may hold, and how Graph says it may not.

Bodies are checked against the v1.0 ``event`` property names (and those of its complex types),
JSON types and enum values: an unknown property → 400 ``RequestBodyRead`` "The property 'x' does
not exist on type 'microsoft.graph.event'..." (OData's wording). Read-only properties sent back
are ignored. ``timeZone`` must be an IANA or Windows zone (400 ``TimeZoneNotSupportedException``).
Extended property ids are normalized (:func:`normalize_prop_id`) so a filter finds what a write
stored whatever the casing of the GUID. Errors take Graph's JSON shape (:func:`graph_error_body`).
"""

from __future__ import annotations

import base64
import copy
import html
import re
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["ANY_FILTER_RE", "EVENT_TYPE", "EXPAND_RE", "GRAPH_DEFAULTS", "RO", "GraphError", "StoredEvent",
           "apply_body", "b64url", "default_location", "fmt_local", "graph_error_body", "normalize_prop_id", "now_iso",
           "parse_dttz", "validate_body", "zone"]

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
    """A Graph API failure, answered in Graph's JSON error shape."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}


GRAPH_DEFAULTS: dict[int, tuple[str, str]] = {
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


def now_iso(precision: int = 7) -> str:
    now = datetime.now(UTC)
    frac = f"{now.microsecond:06d}0"[:precision]
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + frac + "Z"


def graph_error_body(code: str, message: str, request_id: str | None = None) -> dict[str, Any]:
    rid = request_id or str(uuid.uuid4())
    return {"error": {"code": code, "message": message,
                      "innerError": {"date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
                                     "request-id": rid, "client-request-id": rid}}}


def b64url(data: bytes) -> str:
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


ANY_FILTER_RE = re.compile(
    r"^\s*singleValueExtendedProperties/any\(\s*(?P<v>\w+)\s*:\s*(?P=v)/id\s+eq\s+'(?P<id>(?:[^']|'')*)'\s+and\s+"
    r"(?P=v)/value\s+eq\s+'(?P<value>(?:[^']|'')*)'\s*\)\s*$", re.IGNORECASE)
EXPAND_RE = re.compile(
    r"^\s*singleValueExtendedProperties\(\s*\$filter\s*=\s*id\s+eq\s+'(?P<id>(?:[^']|'')*)'\s*\)\s*$", re.IGNORECASE)


# ---- time zones and date-times -----------------------------------------------------------------


def zone(name: str | None) -> ZoneInfo | None:
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


def fmt_local(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond:06d}0"



def parse_dttz(value: Any, key: str) -> tuple[datetime, str]:
    """A ``dateTimeTimeZone`` as an aware instant and the zone name it was written in."""
    if not isinstance(value, dict) or not value.get("dateTime"):
        raise GraphError(400, "ErrorInvalidRequest", f"The '{key}' property requires a 'dateTime'.")
    zone_name = value.get("timeZone") or "UTC"
    tz = zone(zone_name)
    if tz is None:
        raise GraphError(400, "TimeZoneNotSupportedException",
                         f"A valid TimeZone value must be specified. The following TimeZone value is not "
                         f"supported: '{zone_name}'.")
    try:
        dt = _parse_local(value["dateTime"])
    except ValueError:
        raise GraphError(400, "RequestBodyRead", f"Cannot convert the literal '{value['dateTime']}' to the "
                                                 "expected type 'Edm.DateTimeOffset'.") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=tz)
    return dt, zone_name


def default_location() -> dict[str, Any]:
    """The ``location`` Graph returns for an event that has none."""
    return {"displayName": "", "locationType": "default", "uniqueIdType": "unknown", "address": {},
            "coordinates": {}}


# ---- writing a body onto an event ---------------------------------------------------------------


@dataclass
class StoredEvent:
    """An event as the mailbox holds it, with its extended properties and its instants for sorting."""

    event: dict[str, Any]  # Graph JSON as stored (start/end in the zone they were written in)
    calendar_id: str
    props: dict[str, dict[str, str]] = field(default_factory=dict)  # normalized id -> {"id", "value"}
    start: datetime | None = None
    end: datetime | None = None


def apply_body(stored: StoredEvent, body: dict[str, Any], *, creating: bool) -> None:
    """Write a validated body onto an event, as Exchange does.

    Top-level properties replace; extended properties upsert; read-only properties are ignored.
    Every check runs before anything is written, so a refused PATCH leaves the event as it was.
    """
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
            times[key] = parse_dttz(writable[key], key)
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
            ev[k] = default_location() if k == "location" else ([] if k in ("locations", "attendees",
                                                                             "categories") else None)
        else:
            ev[k] = copy.deepcopy(v)
    for key, (instant, zone_name) in times.items():
        stored_key = "start" if key == "start" else "end"
        local = instant.astimezone(zone(zone_name)).replace(tzinfo=None)
        ev[stored_key] = {"dateTime": fmt_local(local), "timeZone": zone_name}
        ev["originalStartTimeZone" if key == "start" else "originalEndTimeZone"] = zone_name
        setattr(stored, key, instant)
    if "location" in writable:
        loc = writable["location"]
        if loc:
            full = default_location()
            full.update(copy.deepcopy(loc))
            if full.get("displayName") and "uniqueId" not in loc:
                full.update(uniqueId=full["displayName"], uniqueIdType="private")
            ev["location"] = full
            ev["locations"] = [copy.deepcopy(full)] if full.get("displayName") else []
        else:
            ev["location"], ev["locations"] = default_location(), []
    elif "locations" in writable:
        locs = writable["locations"] or []
        ev["location"] = copy.deepcopy(locs[0]) if locs else default_location()
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
