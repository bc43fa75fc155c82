"""One iMIP invite (RFC 6047) for one recipient of a session.  (pure)

The shape follows what Google Calendar and nodemailer send and CalConnect
recommends, because each client recognises a different part::

    multipart/mixed
      multipart/alternative
        text/plain, text/html            people read these
        text/calendar; method=...        Gmail, Apple, Evolution act on this (inline)
      application/ics "invite.ics"       Outlook and some webmails need an attachment

Each message lists only its recipient as ATTENDEE (RFC 5546 §6.3), so mentees
never see each other's addresses. Times go out in UTC with no VTIMEZONE:
icalendar 7 builds VTIMEZONEs from RDATE lists, which Outlook ignores and then
shifts events by an hour. The recipient's own zone appears only in the bodies.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Literal
from zoneinfo import ZoneInfo

from icalendar import (
    CUTYPE,
    PARTSTAT,
    ROLE,
    STATUS,
    TRANSP,
    Calendar,
    Event,
    vCalAddress,
    vText,
)

from sync.core.render import RenderedEvent
from sync.core.sanitize import header_safe
from sync.mail.headers import POLICY

Method = Literal["REQUEST", "CANCEL"]

PRODID = "-//calsync//calsync//EN"
ATTACHMENT_NAME = "invite.ics"


_STATUS = {"REQUEST": STATUS.CONFIRMED, "CANCEL": STATUS.CANCELLED}
#: Subject prefixes: a person tells a first invite from an update from a cancellation at a glance.
_SUBJECT_PREFIX = {"REQUEST": "Invitation", "UPDATE": "Updated invitation", "CANCEL": "Cancelled"}
_CANCELLED_NOTE = "This session has been cancelled."


def build_invite(
    event: RenderedEvent,
    *,
    method: Method,
    sequence: int,
    organizer: str,
    dtstamp: datetime,
    update: bool = False,
) -> EmailMessage:
    """The complete message for ``event.recipient``; the caller sends it to that address only.

    ``organizer`` is the service's own address: replies (Accept/Decline) land
    there, and it must never be the recipient, or Outlook treats the recipient
    as the organizer and offers no response. ``update`` says the recipient
    already holds this event (the subject then reads "Updated invitation").
    """
    if method not in _STATUS:
        raise ValueError(f"unsupported iTIP method {method!r}")
    if organizer.strip().lower() == event.recipient.email.strip().lower():
        raise ValueError("the organizer of an invite cannot be its recipient")
    ics = build_calendar(event, method=method, sequence=sequence, organizer=organizer, dtstamp=dtstamp).to_ical()
    msg = EmailMessage(policy=POLICY)
    _set_headers(msg, event, method=method, organizer=organizer, dtstamp=dtstamp,
                 prefix=_SUBJECT_PREFIX["UPDATE" if update and method == "REQUEST" else method])
    msg.set_content(_text_body(event, method))
    msg.add_alternative(_html_body(event, method), subtype="html")
    # RFC 6047 §2.4: the method parameter must equal METHOD inside the object.
    msg.add_alternative(ics.decode("utf-8"), subtype="calendar", params={"method": method})
    msg.add_attachment(ics, maintype="application", subtype="ics", filename=ATTACHMENT_NAME)
    return msg


def build_calendar(
    event: RenderedEvent,
    *,
    method: Method,
    sequence: int,
    organizer: str,
    dtstamp: datetime,
) -> Calendar:
    """The VCALENDAR carried by the invite, with the per-method properties of RFC 5546 §3.2."""
    vevent = Event.new(
        uid=event.uid,
        sequence=sequence,
        stamp=_utc(dtstamp),
        start=_utc(event.start),
        end=_utc(event.end),
        summary=event.title,
        location=event.where or None,
        url=event.view_url,
        description=_description_text(event),
        organizer=vCalAddress.new(organizer, cn=_param_safe(_service_name(event))),
        attendees=[_attendee(event, method)],
        status=_STATUS[method],
        transparency=TRANSP.OPAQUE,
    )
    # vText escapes newlines; a bare string would be written verbatim and
    # could smuggle extra properties into the event (notes §3.6).
    vevent.add("X-ALT-DESC", vText(_description_html(event)), parameters={"FMTTYPE": "text/html"})
    vevent.add("X-MICROSOFT-CDO-APPT-SEQUENCE", sequence)
    calendar = Calendar()
    calendar.add("PRODID", PRODID)
    calendar.add("VERSION", "2.0")
    calendar.add("METHOD", method)
    calendar.add_component(vevent)
    return calendar


def format_when(event: RenderedEvent) -> str:
    """The session's time as the recipient reads it, naming the zone so nobody has to guess.

    e.g. ``Tuesday 1 December 2026, 20:00–21:00 GMT (Europe/London)``.
    """
    start, end = _local(event, event.start), _local(event, event.end)
    if start.date() == end.date() and start.tzname() == end.tzname():
        span = f"{_day(start)}, {start:%H:%M}–{end:%H:%M} {end:%Z}"
    else:
        span = f"{_day(start)}, {start:%H:%M} {start:%Z} – {_day(end)}, {end:%H:%M} {end:%Z}"
    return f"{span} ({event.recipient.timezone})"


def _set_headers(msg: EmailMessage, event: RenderedEvent, *, method: Method, organizer: str,
                 dtstamp: datetime, prefix: str) -> None:
    """Every user-supplied string goes through ``header_safe``: this Python (3.11.7)
    still decodes ``=?..?=`` in headers into new lines (CVE-2024-6923)."""
    sender = Address(display_name=header_safe(_service_name(event)), addr_spec=organizer)
    recipient = event.recipient
    msg["From"] = sender
    msg["To"] = Address(display_name=header_safe(recipient.name or ""), addr_spec=recipient.email)
    msg["Subject"] = header_safe(f"{prefix}: {event.title} — {_day(_local(event, event.start))}")
    msg["Date"] = format_datetime(_utc(dtstamp))
    msg["Message-ID"] = make_msgid(domain=sender.domain)


def _text_body(event: RenderedEvent, method: Method) -> str:
    if method == "CANCEL":
        blocks = [_CANCELLED_NOTE, _text_heading(event, with_place=False)]
        blocks += [f"View & edit: {event.view_url}"] if event.view_url else []
    else:
        blocks = [_text_heading(event, with_place=True), _description_text(event)]
    return "\n\n".join(b for b in blocks if b) + "\n"


def _text_heading(event: RenderedEvent, *, with_place: bool) -> str:
    lines = [event.title, f"When: {format_when(event)}"]
    if with_place and event.location:
        lines.append(f"Where: {event.location}")
    return "\n".join(lines)


def _html_body(event: RenderedEvent, method: Method) -> str:
    if method == "CANCEL":
        blocks = [f"<p><strong>{_esc(_CANCELLED_NOTE)}</strong></p>", _html_heading(event, with_place=False)]
        blocks += [_link_paragraph("View &amp; edit", event.view_url)] if event.view_url else []
    else:
        blocks = [_html_heading(event, with_place=True), _description_html(event)]
    body = "\n".join(b for b in blocks if b)
    return f'<!DOCTYPE html>\n<html>\n<head><meta charset="utf-8"></head>\n<body>\n{body}\n</body>\n</html>\n'


def _html_heading(event: RenderedEvent, *, with_place: bool) -> str:
    lines = [f"<h1>{_esc(event.title)}</h1>", f"<p><strong>When:</strong> {_esc(format_when(event))}</p>"]
    if with_place and event.location:
        lines.append(f"<p><strong>Where:</strong> {_esc(event.location)}</p>")
    return "\n".join(lines)


def _description_text(event: RenderedEvent) -> str:
    """Plain text for DESCRIPTION: Apple and Thunderbird show HTML there as raw tags."""
    blocks = [event.agenda_text] if event.agenda_text else []
    if event.meeting_url:
        blocks.append(f"Join: {event.meeting_url}")
    if event.view_url:
        blocks.append(f"View & edit: {event.view_url}")
    return "\n\n".join(blocks)


def _description_html(event: RenderedEvent) -> str:
    """The same content as HTML; ``agenda_html`` was sanitised on intake, all else is escaped."""
    blocks = [f"<div>{event.agenda_html}</div>"] if event.agenda_html else []
    if event.meeting_url:
        blocks.append(_link_paragraph("Join", event.meeting_url))
    if event.view_url:
        blocks.append(_link_paragraph("View &amp; edit", event.view_url))
    return "\n".join(blocks)


def _attendee(event: RenderedEvent, method: Method) -> vCalAddress:
    """The recipient, and only them; RSVP is asked only while the session is on."""
    return vCalAddress.new(
        event.recipient.email,
        cn=_param_safe(event.recipient.name) or None,
        cutype=CUTYPE.INDIVIDUAL,
        role=ROLE.REQ_PARTICIPANT,
        partstat=PARTSTAT.NEEDS_ACTION,
        rsvp=True if method == "REQUEST" else None,
    )


def _service_name(event: RenderedEvent) -> str:
    return f"{event.program or 'calsync'} sessions"


def _param_safe(text: str | None) -> str:
    """CN values are quoted, and a quote inside would be caret-encoded (RFC 6868),
    which clients without RFC 6868 show literally."""
    return header_safe(text or "").replace('"', "'")


def _link_paragraph(label_html: str, url: str) -> str:
    return f'<p>{label_html}: <a href="{_esc(url)}">{_esc(url)}</a></p>'


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


def _local(event: RenderedEvent, moment: datetime) -> datetime:
    """``moment`` on the recipient's wall clock, which is how their email states times."""
    return _utc(moment).astimezone(ZoneInfo(event.recipient.timezone))


def _day(moment: datetime) -> str:
    return f"{moment:%A} {moment.day} {moment:%B %Y}"


def _utc(moment: datetime) -> datetime:
    """Refuse naive datetimes: converting one would silently use the server's local zone."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"naive datetime {moment.isoformat()} where an aware one is required")
    return moment.astimezone(UTC)
