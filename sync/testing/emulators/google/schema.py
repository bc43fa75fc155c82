"""What a Google Calendar request body may hold, and how Google says it may not.

Request bodies are validated against the discovery document's ``Event`` schema (the
``calendar.v3.json`` google-api-python-client ships), recursively: an unknown field is 400
``invalid`` naming it (``Unknown name "foo" at 'resource.start'``), a value of the wrong JSON
type 400 ``invalid``. Output-only fields (kind, etag, created, ...) sent back are ignored, as
Google does. start/end (:func:`check_times`): missing 400 ``required``, naive dateTime without
timeZone 400 ``required``, unknown zone 400 ``invalid``, end before start 400 ``timeRangeEmpty``.

Errors take Google's JSON shape (:func:`google_error_body`) with the reason's domain.
"""

from __future__ import annotations

import functools
import json
import re
from datetime import UTC, date, datetime
from datetime import time as dtime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

if TYPE_CHECKING:
    from ..server import Request

__all__ = ["ApiError", "REASON_DOMAINS", "STATUS_DEFAULTS", "SchemaValidator", "check_times", "event_span",
           "google_error_body", "load_discovery", "now_rfc3339", "parse_rfc3339", "zone",
           "bool_param", "int_param", "split_prop", "time_param"]

EVENT_ID_RE = re.compile(r"^[a-v0-9]{5,1024}$")
SEND_UPDATES = ("all", "externalOnly", "none")
# Fields Google computes; a client sending them back (e.g. a fetched event) is not an error.
SERVER_OWNED = ("kind", "etag", "id", "htmlLink", "created", "updated", "creator", "organizer",
                "hangoutLink", "iCalUID", "recurringEventId", "privateCopy", "locked")
MAX_RESULTS_DEFAULT, MAX_RESULTS_CAP = 250, 2500

STATUS_DEFAULTS: dict[int, tuple[str, str, str]] = {
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
REASON_DOMAINS = {"userRateLimitExceeded": "usageLimits", "rateLimitExceeded": "usageLimits",
                   "quotaExceeded": "usageLimits", "timeRangeEmpty": "calendar",
                   "forbiddenForNonOrganizer": "calendar"}



class ApiError(Exception):
    """A Calendar API failure, answered in Google's JSON error shape."""

    def __init__(self, status: int, reason: str, message: str, domain: str | None = None,
                 headers: dict[str, str] | None = None, extra: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message
        self.domain = domain or REASON_DOMAINS.get(reason, "global")
        self.headers = headers or {}
        self.extra = extra or {}


def google_error_body(status: int, reason: str, message: str, domain: str = "global",
                      extra: dict[str, Any] | None = None) -> dict[str, Any]:
    item = {"domain": domain, "reason": reason, "message": message}
    item.update(extra or {})
    return {"error": {"errors": [item], "code": status, "message": message}}


def now_rfc3339() -> str:
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def _fromiso(value: str) -> datetime:
    """RFC 3339 date-time (also lower-case "z"); naive when it carries no offset."""
    v = value.strip()
    if v[-1:] in ("Z", "z"):
        v = v[:-1] + "+00:00"
    return datetime.fromisoformat(v)


def parse_rfc3339(value: str) -> datetime:
    """An aware datetime; raises ValueError when malformed or without an offset."""
    dt = _fromiso(value)
    if dt.tzinfo is None:
        raise ValueError("missing offset")
    return dt


def zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        return None



# ---- schema validation against the discovery document ----------------------------------------


@functools.lru_cache(maxsize=1)
def load_discovery() -> dict[str, Any]:
    """The discovery document the client library ships: the same schema the real client was built from."""
    from googleapiclient.discovery_cache import get_static_doc

    doc = get_static_doc("calendar", "v3")
    if doc is None:  # pragma: no cover - the wheel always ships it
        raise RuntimeError("calendar.v3.json not found in googleapiclient/discovery_cache/documents")
    return json.loads(doc)


class SchemaValidator:
    """Checks a JSON value against a schema of the discovery document, naming the first offence."""

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



def check_times(ev: dict[str, Any], tz_default: str) -> None:
    """start/end as Google checks them on insert, update and patch; raises :class:`ApiError`."""
    instants = {}
    kinds = {}
    for key in ("start", "end"):
        edt = ev.get(key)
        if not isinstance(edt, dict) or not (edt.get("dateTime") or edt.get("date")):
            raise ApiError(400, "required", f"Missing {key} time.")
        tzname = edt.get("timeZone")
        if tzname and zone(tzname) is None:
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
                    dt = dt.replace(tzinfo=zone(tzname))
            else:
                kinds[key] = "date"
                d = date.fromisoformat(edt["date"])
                dt = datetime.combine(d, dtime(0), zone(tzname or tz_default) or UTC)
        except (ValueError, TypeError, AttributeError):
            raise ApiError(400, "invalid", f"Invalid {key} time.") from None
        instants[key] = dt
    if kinds["start"] != kinds["end"]:
        raise ApiError(400, "invalid", "Invalid start or end time: both must be dates or both dateTimes.")
    if instants["end"] < instants["start"]:
        raise ApiError(400, "timeRangeEmpty", "The specified time range is empty.", "calendar")


def event_span(ev: dict[str, Any], tz_default: str) -> tuple[datetime | None, datetime | None]:
    out = []
    for key in ("start", "end"):
        edt = ev.get(key) or {}
        try:
            if edt.get("dateTime"):
                dt = _fromiso(edt["dateTime"])
                if dt.tzinfo is None:
                    dt = dt.replace(tzinfo=zone(edt.get("timeZone") or tz_default) or UTC)
            elif edt.get("date"):
                dt = datetime.combine(date.fromisoformat(edt["date"]), dtime(0),
                                      zone(edt.get("timeZone") or tz_default) or UTC)
            else:
                dt = None
        except ValueError:
            dt = None
        out.append(dt)
    return out[0], out[1]


# ---- query parameters -------------------------------------------------------------------------


def bool_param(req: Request, name: str, default: bool) -> bool:
    v = req.param(name)
    if v is None:
        return default
    if v.lower() in ("true", "1"):
        return True
    if v.lower() in ("false", "0"):
        return False
    raise ApiError(400, "invalidParameter", f"Invalid boolean value for {name}: {v}")


def int_param(req: Request, name: str, default: int, minimum: int) -> int:
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


def time_param(req: Request, name: str) -> datetime | None:
    v = req.param(name)
    if v is None:
        return None
    try:
        return parse_rfc3339(v)
    except (ValueError, IndexError):
        raise ApiError(400, "badRequest", "Bad Request") from None


def split_prop(constraint: str) -> tuple[str, str]:
    name, sep, value = constraint.partition("=")
    if not sep or not name:
        raise ApiError(400, "invalid", f"Invalid extended property constraint: {constraint}")
    return name, value
