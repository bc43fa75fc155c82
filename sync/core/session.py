"""The session as the platform sends it, and its validation.

Validation is strict on purpose: every error names the field (for example
``participants[1].email``) so the platform can fix what it sent, and a
session that fails is never partly stored. Unknown fields such as private
notes are dropped here and never reach the store.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from sync.core.sanitize import clean_html, has_control_chars
from sync.errors import FieldError, InvalidInput

#: Longest agenda accepted, in characters of HTML; Google and Graph bodies and
#: mail clients all cope well below this.
MAX_AGENDA_CHARS = 64_000
#: Most participants one session may have.
MAX_PARTICIPANTS = 500
#: Years (in UTC, inclusive) a start or end may fall in. Wide enough for any real
#: session, narrow enough that converting to any participant's zone, rendering and
#: storing never leave the range of ``datetime`` or of a database timestamp.
MIN_YEAR, MAX_YEAR = 1900, 9000
#: Largest version the store's BigInteger column holds.
MAX_VERSION = 2**63 - 1

Status = Literal["scheduled", "cancelled"]


def _plain_line(value: str | None, *, header: bool = False) -> str | None:
    if value is None:
        return None
    if has_control_chars(value):
        raise ValueError("must be a single line without control characters (CR, LF, tab…)")
    if header and "=?" in value:
        raise ValueError("must not contain the encoded-word marker '=?'")
    value = value.strip()
    if not value:
        raise ValueError("must not be empty")
    return value


def _zone(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown IANA time zone {value!r}") from None
    return value


def _https(value: str | None) -> str | None:
    if value is None:
        return None
    _plain_line(value)
    if not value.lower().startswith("https://") or len(value) <= len("https://"):
        raise ValueError("must be an https:// URL")
    if any(c in value for c in ' <>"'):
        raise ValueError("must be a URL without spaces, quotes or angle brackets")
    return value


class Participant(BaseModel):
    """One person in a session; ``timezone`` is how times are written in their email."""

    model_config = ConfigDict(extra="ignore", frozen=True, str_max_length=320)

    user_id: str = Field(min_length=1, max_length=200)
    email: EmailStr
    name: str | None = None
    #: At most what the ``participants.role`` column holds (PostgreSQL refuses longer).
    role: str = Field(default="participant", max_length=64)
    timezone: str | None = None

    _user_id = field_validator("user_id")(lambda v: _plain_line(v, header=True))
    _name = field_validator("name")(lambda v: _plain_line(v, header=True))
    _role = field_validator("role")(lambda v: _plain_line(v))
    _tz = field_validator("timezone")(lambda v: _zone(v))

    @field_validator("email", mode="before")
    @classmethod
    def _bare_address(cls, value: Any) -> Any:
        if isinstance(value, str) and (has_control_chars(value) or "<" in value or "=?" in value):
            raise ValueError("must be a bare address like name@example.com")
        return value.lower() if isinstance(value, str) else value


class Session(BaseModel):
    """A mentoring session; the single truth that every calendar projection follows."""

    model_config = ConfigDict(extra="ignore", frozen=True, str_max_length=2048)

    id: str = Field(min_length=1, max_length=200)
    version: int = Field(ge=0, le=MAX_VERSION, strict=True)
    title: str = Field(max_length=500)
    program: str | None = Field(default=None, max_length=200)
    start: AwareDatetime
    end: AwareDatetime
    timezone: str
    status: Status = "scheduled"
    meeting_url: str | None = None
    location: str | None = Field(default=None, max_length=500)
    agenda_html: str = Field(default="", max_length=MAX_AGENDA_CHARS)
    view_url: str | None = None
    participants: tuple[Participant, ...] = Field(min_length=1, max_length=MAX_PARTICIPANTS)

    _id = field_validator("id")(lambda v: _plain_line(v, header=True))
    _title = field_validator("title")(lambda v: _plain_line(v, header=True))
    _program = field_validator("program")(lambda v: _plain_line(v, header=True))
    _location = field_validator("location")(lambda v: _plain_line(v, header=True))
    _tz = field_validator("timezone")(lambda v: _zone(v))
    _urls = field_validator("meeting_url", "view_url")(lambda v: _https(v))

    @field_validator("agenda_html")
    @classmethod
    def _sanitise(cls, value: str) -> str:
        return clean_html(value)

    @field_validator("start", "end")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        """Store UTC only, and refuse times whose conversion overflows (9999-12-31T23:00-05:00
        is year 10000 in UTC) or that fall outside the sane range, as a named field error
        rather than an OverflowError that would crash the whole batch."""
        out_of_range = f"must be between the years {MIN_YEAR} and {MAX_YEAR} in UTC"
        try:
            utc = value.astimezone(timezone.utc)
        except OverflowError:
            raise ValueError(f"{out_of_range}, got {value.isoformat()}") from None
        if not MIN_YEAR <= utc.year <= MAX_YEAR:
            raise ValueError(f"{out_of_range}, got {value.isoformat()}")
        return utc

    @model_validator(mode="after")
    def _consistent(self) -> Session:
        if self.end <= self.start:
            raise ValueError("end: must be after start")
        if not self.meeting_url and not self.location:
            raise ValueError("meeting_url: a session needs a meeting_url, a location, or both")
        seen_ids: set[str] = set()
        seen_emails: set[str] = set()
        for i, p in enumerate(self.participants):
            if p.user_id in seen_ids:
                raise ValueError(f"participants[{i}].user_id: duplicate user_id {p.user_id!r}")
            if p.email in seen_emails:
                raise ValueError(f"participants[{i}].email: duplicate email {p.email!r}")
            seen_ids.add(p.user_id)
            seen_emails.add(p.email)
        return self


@dataclass(frozen=True, slots=True)
class StoredParticipant:
    """A participant read back from the store for bulk planning (validated when it came in)."""

    user_id: str
    email: str
    name: str | None
    role: str
    timezone: str | None


@dataclass(frozen=True, slots=True)
class StoredSession:
    """A session read back from the store for bulk planning: the same attributes as
    :class:`Session` at a fraction of the cost of building a pydantic model."""

    id: str
    version: int
    title: str
    program: str | None
    start: datetime
    end: datetime
    timezone: str
    status: str
    meeting_url: str | None
    location: str | None
    agenda_html: str
    view_url: str | None
    participants: tuple[StoredParticipant, ...]


#: Anything the renderer and planner accept as a session / a participant.
SessionLike = Session | StoredSession
ParticipantLike = Participant | StoredParticipant


def as_model(session: SessionLike) -> Session:
    """The pydantic model of a stored session, for output in the contract's JSON shape.

    It was validated (and sanitised) on the way in, so it is constructed without
    validating again.
    """
    if isinstance(session, Session):
        return session
    return Session.model_construct(
        id=session.id, version=session.version, title=session.title, program=session.program, start=session.start,
        end=session.end, timezone=session.timezone, status=session.status, meeting_url=session.meeting_url,
        location=session.location, agenda_html=session.agenda_html, view_url=session.view_url,
        participants=tuple(Participant.model_construct(user_id=p.user_id, email=p.email, name=p.name, role=p.role,
                                                       timezone=p.timezone) for p in session.participants))


def _field_path(loc: tuple[Any, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "session"


def _reason(err: dict[str, Any]) -> tuple[str | None, str]:
    """Split our own "field: reason" messages from model validators; keep pydantic's otherwise."""
    msg = str(err.get("msg", "invalid"))
    msg = msg.removeprefix("Value error, ")
    if err.get("type") == "value_error" and not err["loc"] and ": " in msg:
        field, _, reason = msg.partition(": ")
        return field, reason
    if err.get("type") == "timezone_aware":
        msg = "needs a UTC offset, e.g. 2026-12-01T15:00:00-05:00"
    elif err.get("type") == "missing":
        msg = "is required"
    elif err.get("type") == "literal_error":
        msg = f"must be one of {err.get('ctx', {}).get('expected', '')}, got {err.get('input')!r}"
    return None, msg


def parse_session(data: Any) -> Session:
    """Validate one session object from the platform.

    Raises:
      InvalidInput: naming every field at fault.
    """
    if not isinstance(data, dict):
        raise InvalidInput([FieldError("session", f"expected a JSON object, got {type(data).__name__}")])
    try:
        return Session.model_validate(data)
    except ValidationError as exc:
        errors = []
        for err in exc.errors():
            field, reason = _reason(err)
            errors.append(FieldError(field or _field_path(err["loc"]), reason))
        raise InvalidInput(errors) from None


def load_json(raw: bytes) -> list[Any]:
    """Decode platform input (one object or an array) into a list of candidate sessions.

    Whatever the bytes are, the answer is an ``input`` field error, never a
    crash: the CLI turns it into one line with exit status 2. Besides syntax
    errors, Python's json module raises ``RecursionError`` for arrays or
    objects nested deeper than the interpreter's stack allows (100,000 ``[``
    on stdin), and ``ValueError`` for an integer of more than 4,300 digits
    (CVE-2020-10735's limit).

    Raises:
      InvalidInput: if the bytes are not UTF-8 JSON that Python can hold.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        reason = f"not UTF-8 (byte {raw[exc.start]:#04x} at offset {exc.start})"
        raise InvalidInput([FieldError("input", reason)]) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        reason = f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        raise InvalidInput([FieldError("input", reason)]) from None
    except RecursionError:
        raise InvalidInput([FieldError("input", "JSON nested too deeply (arrays or objects inside each other "
                                                "beyond what can be read)")]) from None
    except ValueError as exc:  # e.g. an integer with more digits than int() accepts
        reason = f"not usable JSON: {' '.join(str(exc).split(';')[0].split())}"
        raise InvalidInput([FieldError("input", reason)]) from None
    return data if isinstance(data, list) else [data]
