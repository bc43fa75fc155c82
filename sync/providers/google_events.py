"""Rendered event ↔ Google Calendar v3 JSON, and the event ids calsync chooses.  (pure)"""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo

from sync.core.drift import Observed
from sync.core.render import RenderedEvent
from sync.providers.body import event_html

#: extendedProperties.private keys that tag an event as calsync's.
TAG_SESSION = "calsyncSession"
TAG_VERSION = "calsyncVersion"
TAG_USER = "calsyncUser"


def event_id(session_id: str, user_id: str, generation: int = 0) -> str:
    """Deterministic client-chosen id, so a retried insert hits 409 instead of duplicating.

    Hex digits are a subset of base32hex (a–v, 0–9), and 34 characters sits well
    inside the 5–1024 allowed. ``generation`` moves to a fresh id when Google
    will not revive an event the person deleted (its id stays taken).
    """
    digest = hashlib.sha256(f"{session_id}\0{user_id}\0{generation}".encode()).hexdigest()
    return "cs" + digest[:32]


def generation_of(session_id: str, user_id: str, eid: str | None, limit: int = 64) -> int:
    for g in range(limit):
        if event_id(session_id, user_id, g) == eid:
            return g
    return 0


def _when(event: RenderedEvent, at: Any) -> dict[str, str]:
    return {"dateTime": at.astimezone(ZoneInfo(event.timezone)).isoformat(), "timeZone": event.timezone}


def to_google(event: RenderedEvent, eid: str) -> dict[str, Any]:
    """The full body calsync owns. No attendees: the copy lives only in this person's
    calendar, so Google has nobody to invite or email."""
    body: dict[str, Any] = {
        "id": eid,
        "summary": event.title,
        "start": _when(event, event.start),
        "end": _when(event, event.end),
        "description": event_html(event),
        "status": "confirmed",
        "transparency": "opaque",
        "reminders": {"useDefault": True},
        "extendedProperties": {"private": {
            TAG_SESSION: event.session_id, TAG_VERSION: str(event.version), TAG_USER: event.recipient.user_id,
        }},
    }
    if event.where:
        body["location"] = event.where
    if event.view_url:
        body["source"] = {"title": event.program or "calsync", "url": event.view_url}
    return body


def _utc(when: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(when["dateTime"].replace("Z", "+00:00")).astimezone(timezone.utc)


def observed(item: dict[str, Any]) -> Observed:
    return Observed(external_id=str(item["id"]), title=str(item.get("summary", "")), start=_utc(item["start"]),
                    end=_utc(item["end"]), where=str(item.get("location", "")),
                    cancelled=item.get("status") == "cancelled")
