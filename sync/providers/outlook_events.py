"""Rendered event ↔ Microsoft Graph event JSON, and the ids calsync chooses.  (pure)"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

from sync.core.drift import Observed
from sync.core.render import RenderedEvent
from sync.providers.body import event_html

#: The single-value extended property that tags an event with (session, person).
#: "After you have chosen one format for the id, you should access that extended
#: property by only that format" (Graph docs), so it is spelled once, here.
TAG_PROPERTY = "String {3c0e5f5c-7c71-4a39-9b0a-6f1c2d1b8e44} Name calsyncPlacement"
#: Namespace for transactionIds, so a retried POST is recognised as the same create.
TRANSACTION_NAMESPACE = uuid.UUID("9a4b2e1c-0f44-4f31-8a7e-2b8c9d0e1f23")


def tag_value(session_id: str, user_id: str) -> str:
    return f"{session_id}/{user_id}"


def transaction_id(session_id: str, user_id: str, generation: int = 0) -> str:
    return str(uuid.uuid5(TRANSACTION_NAMESPACE, f"{session_id}\0{user_id}\0{generation}"))


def _when(at: Any) -> dict[str, str]:
    # UTC with no offset in dateTime, as Graph's dateTimeTimeZone wants; Outlook
    # shows it in each person's own zone.
    return {"dateTime": at.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"}


def to_graph(event: RenderedEvent) -> dict[str, Any]:
    """The fields calsync owns. No attendees: an appointment invites nobody."""
    return {
        "subject": event.title,
        "body": {"contentType": "html", "content": event_html(event)},
        "start": _when(event.start),
        "end": _when(event.end),
        "location": {"displayName": event.where},
        "isReminderOn": True,
        "reminderMinutesBeforeStart": 15,
        "showAs": "busy",
        "singleValueExtendedProperties": [
            {"id": TAG_PROPERTY, "value": tag_value(event.session_id, event.recipient.user_id)}],
    }


def for_create(event: RenderedEvent, generation: int = 0) -> dict[str, Any]:
    return {**to_graph(event), "transactionId": transaction_id(event.session_id, event.recipient.user_id, generation)}


def tag_filter(session_id: str, user_id: str) -> str:
    value = tag_value(session_id, user_id).replace("'", "''")
    return f"singleValueExtendedProperties/Any(ep: ep/id eq '{TAG_PROPERTY}' and ep/value eq '{value}')"


def observed(item: dict[str, Any]) -> Observed:
    def utc(when: dict[str, str]) -> datetime:
        # Asked for in UTC (Prefer: outlook.timezone); Graph writes 7 fractional digits.
        return datetime.fromisoformat(when["dateTime"][:19]).replace(tzinfo=timezone.utc)

    return Observed(external_id=str(item["id"]), title=str(item.get("subject", "")), start=utc(item["start"]),
                    end=utc(item["end"]), where=str((item.get("location") or {}).get("displayName", "")),
                    cancelled=bool(item.get("isCancelled")))
