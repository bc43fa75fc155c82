"""The API's response shapes, so ``/openapi.json`` describes every answer it can give."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

#: An id in a path: one line, no control characters (what intake and connect links accept).
#: Declared as the path parameter's pattern, so a client learns the rule from the spec.
ONE_LINE_ID = r"^[^\x00-\x1f\x7f-\x9f\u2028\u2029]+$"


class ErrorOut(BaseModel):
    error: str


class FieldErrorOut(BaseModel):
    field: str
    message: str


class FieldErrorsOut(BaseModel):
    errors: list[FieldErrorOut]


class IntakeOut(BaseModel):
    id: str
    version: int
    outcome: Literal["created", "updated", "unchanged"]


class PlacementOut(BaseModel):
    user_id: str
    channel: str
    state: str
    #: Whether a copy may exist on the person's calendar or in their mailbox.
    live: bool
    sequence: int
    #: The provider's event id (Google, Outlook), or the invite's UID for email.
    event_id: str | None
    last_error: str | None


class SessionOut(BaseModel):
    session: dict[str, Any]
    revision: int
    synced_revision: int
    placements: list[PlacementOut]


class ConnectLinkIn(BaseModel):
    provider: Literal["google", "outlook"] | None = None
    #: Checked by the server (an http(s) URL whose host is in CALSYNC_RETURN_HOSTS), declared here
    #: as far as a schema can say it.
    return_to: str | None = Field(default=None, max_length=2048, json_schema_extra={
        "format": "uri", "pattern": r"^https?://[^/?#\s]+",
        "description": "Where the browser goes afterwards: an http(s) URL whose host is in CALSYNC_RETURN_HOSTS."})


class ConnectLinkOut(BaseModel):
    url: str
    expires_at: datetime


class IntegrationOut(BaseModel):
    user_id: str
    provider: str
    account: str | None
    status: str
    reason: str | None
    since: datetime


class DisconnectOut(BaseModel):
    user_id: str
    status: str
    remaining: int
    sessions: list[str]


#: What every /v1 route may answer besides its success.
COMMON: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "missing or wrong bearer token"},
    413: {"model": ErrorOut, "description": "body over CALSYNC_HTTP_MAX_BODY_BYTES"},
    422: {"model": FieldErrorsOut, "description": "invalid input, every field error named"},
    503: {"model": ErrorOut, "description": "calsync is not configured for this request"},
}
