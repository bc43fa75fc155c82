"""Reading back what the demo's run left: the ``.eml`` outbox, and each emulator's calendars
through that provider's own reader, found by calsync's tag, compared with what the store believes."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

if TYPE_CHECKING:
    from sync.core.drift import Observed
    from sync.testing.emulators.google import GoogleEmulator
    from sync.testing.emulators.graph import GraphEmulator


@dataclass(frozen=True)
class Calendars:
    """The emulators behind the calendar channels, read back the way each provider answers."""

    google: GoogleEmulator
    outlook: GraphEmulator

    def add_user(self, channel: str, email: str) -> str:
        """A refresh token for ``email``, as if they had just consented to calsync on that provider."""
        emulator: GoogleEmulator | GraphEmulator = self.google if channel == "google" else self.outlook
        return emulator.add_user(email)

    def copies(self, channel: str, owner: str, user_id: str, session_id: str) -> list[Observed]:
        """Live copies of one session on ``owner``'s calendar, found by calsync's tag, in provider-neutral terms."""
        if channel == "google":
            from sync.providers.google_events import TAG_SESSION, TAG_USER, observed

            tag = {TAG_SESSION: session_id, TAG_USER: user_id}
            items = [e for e in self.google.events(owner)
                     if tag.items() <= e.get("extendedProperties", {}).get("private", {}).items()]
        elif channel == "outlook":
            from sync.providers.outlook_events import TAG_PROPERTY, observed, tag_value

            value = tag_value(session_id, user_id)
            items = [e for e in self.outlook.events(owner)
                     if any(p.get("id") == TAG_PROPERTY and p.get("value") == value
                            for p in e.get("singleValueExtendedProperties", []))]
        else:
            raise ValueError(f"no calendar emulator for the {channel} channel")
        return [copy for copy in map(observed, items) if not copy.cancelled]


@dataclass(frozen=True)
class Invite:
    """One ``.eml`` file in the outbox, reduced to what a calendar matches and orders by."""

    path: Path
    recipient: str
    uid: str
    method: str
    sequence: int
    dtstamp: datetime

    @property
    def order(self) -> tuple[int, datetime, int, str]:
        # SEQUENCE first, then DTSTAMP (RFC 5546 §2.1.5); DTSTAMP has one-second
        # resolution, so the file's write time breaks ties within a second.
        return self.sequence, self.dtstamp, self.path.stat().st_mtime_ns, self.path.name


@dataclass(frozen=True)
class Row:
    """One person's copy of one session through one channel: as the store records it, and as it landed."""

    person: str
    session_id: str
    channel: str
    state: str
    #: What landed, in one line: the invites' METHOD:SEQUENCE history, or the event on the calendar now.
    landed: str
    method: str | None = None
    sequence: int | None = None
    files: int = 0
    history: str = ""
    event_id: str | None = None
    event_start: str | None = None
    event_summary: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Report:
    outbox: Path
    database: str
    google_url: str | None = None
    outlook_url: str | None = None
    steps: list[str] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)
    integrations: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def per_session(histories: dict[str, str]) -> str:
    return ", ".join(f"{sid} {history}" for sid, history in histories.items())


def read_outbox(outbox: Path) -> list[Invite]:
    """Parse every ``.eml`` as a mail client would (:func:`sync.testing.mail.read_outbox`)."""
    from sync.testing.mail import read_outbox as read_mails

    return [Invite(path=m.path or outbox, recipient=m.recipient, uid=m.uid, method=m.method, sequence=m.sequence,
                   dtstamp=m.dtstamp) for m in read_mails(outbox)]


def event_time(copy: Observed, zone: str) -> str:
    """An event's start as a calendar shows it: local time in the session's zone."""
    start = copy.start.astimezone(ZoneInfo(zone))
    return f"{start:%a %d %b %H:%M} {start.tzname()}"


def event_line(copy: Observed, zone: str) -> str:
    return f"{event_time(copy, zone)} “{copy.title}”"


def summarise(report: Report, calendars: Calendars, session_ids: list[str]) -> None:
    from sync import api

    landed: dict[tuple[str, str], list[Invite]] = {}
    for invite in read_outbox(report.outbox):
        landed.setdefault((invite.recipient, invite.uid), []).append(invite)
    for session_id in session_ids:
        view = api.get_session(session_id)
        session = view.session
        participating = {p.user_id for p in session.participants} if session.status == "scheduled" else set()
        for p in view.placements:
            person = p.recipient_name or p.recipient_email
            where = f"{person} / {session_id} / {p.channel}"
            if p.state not in ("placed", "withdrawn"):
                report.problems.append(f"{where}: placement is {p.state} ({p.last_error})")
            if p.channel == "email":
                invites = sorted(landed.get((p.recipient_email, p.uid), []), key=lambda i: i.order)
                last = invites[-1] if invites else None
                history = " → ".join(f"{i.method}:{i.sequence}" for i in invites)
                report.rows.append(Row(
                    person=person, session_id=session_id, channel=p.channel, state=p.state,
                    landed=history or "nothing", method=last.method if last else None,
                    sequence=last.sequence if last else None, files=len(invites), history=history,
                ))
                if last is None or last.sequence != p.sequence or last.method != ("REQUEST" if p.live else "CANCEL"):
                    report.problems.append(f"{where}: the last invite on disk does not match the placement "
                                           f"({p.state}, SEQUENCE {p.sequence})")
                continue
            # A calendar channel (Google or Outlook): what is on the person's calendar now, read back
            # from that provider's emulator by calsync's tag.
            copies = calendars.copies(p.channel, p.recipient_email, p.user_id, session_id)
            copy = copies[0] if len(copies) == 1 else None
            report.rows.append(Row(
                person=person, session_id=session_id, channel=p.channel, state=p.state,
                landed=event_line(copy, session.timezone) if copy else (
                    "no event (deleted)" if not copies else f"{len(copies)} events (duplicates!)"),
                event_id=copy.external_id if copy else None,
                event_start=copy.start.isoformat() if copy else None,
                event_summary=copy.title if copy else None,
            ))
            if p.live:
                if copy is None or copy.external_id != p.external_id:
                    report.problems.append(f"{where}: expected one event {p.external_id} on the calendar, "
                                           f"found {[c.external_id for c in copies]}")
                elif copy.start != session.start or copy.title != session.title:
                    report.problems.append(f"{where}: the event on the calendar does not match the session "
                                           f"({copy.start.isoformat()} “{copy.title}”)")
            elif copies:
                report.problems.append(f"{where}: withdrawn, yet {len(copies)} event(s) are still on the calendar")
        # One copy per person, never two: exactly one live placement per participant, none for the rest.
        live: dict[str, int] = {}
        for p in view.placements:
            live[p.user_id] = live.get(p.user_id, 0) + (1 if p.state == "placed" else 0)
        for user_id, count in live.items():
            want = 1 if user_id in participating else 0
            if count != want:
                report.problems.append(f"{user_id} / {session_id}: {count} live copies, expected {want}")
    report.rows.sort(key=lambda r: (r.person, r.session_id, r.channel))
