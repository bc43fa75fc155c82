"""Session × participant → the provider-neutral event every channel places.  (pure)

Two hashes come out with it: ``content_hash`` covers everything a person
sees, so an unchanged session costs no send; ``material_hash`` covers only
what RFC 5546 §2.1.4 calls a reschedule (time, place, link, status), which is
what raises an emailed invite's SEQUENCE.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property, lru_cache

from sync.core.sanitize import html_to_text
from sync.core.session import ParticipantLike, SessionLike

#: Namespace for invite UIDs: derived from the session id, so stable, and
#: opaque, so no personal data sits in a UID.
UID_NAMESPACE = uuid.UUID("6b0e7c38-5a5e-4c53-9d0e-8c1f3d2f6a11")
UID_DOMAIN = "calsync"


@lru_cache(maxsize=65536)
def session_uid(session_id: str) -> str:
    return f"{uuid.uuid5(UID_NAMESPACE, session_id)}@{UID_DOMAIN}"


@dataclass(frozen=True)
class Recipient:
    """Whose copy this is: the address an invite goes to, and the zone their email text uses."""

    user_id: str
    email: str
    name: str | None
    timezone: str


@dataclass(frozen=True)
class RenderedEvent:
    """What a session looks like on one person's calendar, whatever the channel."""

    session_id: str
    uid: str
    title: str
    program: str | None
    start: datetime  #: UTC
    end: datetime  #: UTC
    timezone: str  #: the session's IANA zone, for calendars
    meeting_url: str | None
    location: str | None
    agenda_html: str
    agenda_text: str
    view_url: str | None
    cancelled: bool
    recipient: Recipient
    #: The platform's version, for tagging provider events; not part of what a person
    #: sees, so a version bump alone changes no hash and costs no send.
    version: int = field(default=0, compare=False)

    @property
    def where(self) -> str:
        """One line for a calendar's location field: the place, the link, or both."""
        return " · ".join(p for p in (self.location, self.meeting_url) if p)

    @staticmethod
    def _digest(values: list[object]) -> str:
        return hashlib.sha256(json.dumps(values, default=str).encode()).hexdigest()

    # Hashed for every placement of every session a resync plans, hence flat
    # lists (no asdict deep copies) and computed once per event.
    @cached_property
    def content_hash(self) -> str:
        r = self.recipient
        return self._digest([
            self.session_id, self.uid, self.title, self.program, self.start, self.end, self.timezone,
            self.meeting_url, self.location, self.agenda_html, self.agenda_text, self.view_url, self.cancelled,
            r.user_id, r.email, r.name, r.timezone,
        ])

    @cached_property
    def material_hash(self) -> str:
        return self._digest([self.start, self.end, self.meeting_url, self.location, self.cancelled])


def render(session: SessionLike, participant: ParticipantLike) -> RenderedEvent:
    return RenderedEvent(
        session_id=session.id,
        uid=session_uid(session.id),
        title=session.title,
        program=session.program,
        start=session.start,
        end=session.end,
        timezone=session.timezone,
        meeting_url=session.meeting_url,
        location=session.location,
        agenda_html=session.agenda_html,
        agenda_text=html_to_text(session.agenda_html),
        view_url=session.view_url,
        cancelled=session.status == "cancelled",
        recipient=Recipient(
            user_id=participant.user_id,
            email=participant.email,
            name=participant.name,
            timezone=participant.timezone or session.timezone,
        ),
        version=session.version,
    )
