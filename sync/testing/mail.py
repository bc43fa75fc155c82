"""Reads the invites calsync mails the way a mail client would: MIME first, then the text/calendar part.

The ``file://`` mail transport writes each message as an ``.eml`` file, and the SMTP test server
hands over raw bytes; the demo's summary, the CLI tests and the reliability rig's calendar view
all need the same facts back (who it went to, METHOD, UID, SEQUENCE). One reader means one
place that decides what a readable invite is.
"""

from __future__ import annotations

import email
import email.policy
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import getaddresses
from pathlib import Path
from typing import Any, cast

__all__ = ["MailedInvite", "read_invite", "read_outbox"]


@dataclass(frozen=True)
class MailedInvite:
    """One message with its calendar: the parsed MIME message, its text/calendar part and its VEVENT."""

    message: EmailMessage
    part: EmailMessage  # the text/calendar part (its ``method`` parameter must match METHOD)
    calendar: Any  # icalendar.Calendar
    event: Any  # the one VEVENT
    path: Path | None = None

    @property
    def recipient(self) -> str:
        """The first ``To`` address, lower-case."""
        return getaddresses([str(self.message["To"])])[0][1].lower()

    @property
    def method(self) -> str:
        return str(self.calendar.get("METHOD", "")).upper()

    @property
    def uid(self) -> str:
        return str(self.event["UID"])

    @property
    def sequence(self) -> int:
        return int(self.event.get("SEQUENCE", 0))

    @property
    def dtstamp(self) -> datetime | None:
        return self.event.decoded("DTSTAMP") if "DTSTAMP" in self.event else None


def read_invite(raw: bytes, path: Path | None = None) -> MailedInvite | None:
    """The invite in one message, or None when it has no text/calendar part.

    Raises ValueError when the calendar does not hold exactly one VEVENT: calsync sends one event
    per invite, so anything else is a malformed invite to report, not to skip.
    """
    from icalendar import Calendar

    message = cast(EmailMessage, email.message_from_bytes(raw, policy=email.policy.default))
    part = next((p for p in message.walk() if p.get_content_type() == "text/calendar"), None)
    if part is None:
        return None
    calendar = Calendar.from_ical(part.get_content())
    events = list(calendar.walk("VEVENT"))
    if len(events) != 1:
        raise ValueError(f"expected one VEVENT, found {len(events)}")
    return MailedInvite(message=message, part=part, calendar=calendar, event=events[0], path=path)


def read_outbox(folder: Path) -> list[MailedInvite]:
    """Every invite the file transport wrote into ``folder``, in file-name (= sending) order."""
    found = []
    for path in sorted(folder.glob("*.eml")):
        invite = read_invite(path.read_bytes(), path)
        if invite is not None:
            found.append(invite)
    return found
