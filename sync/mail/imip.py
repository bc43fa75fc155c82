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

import base64
import email.policy
import html
import re
import unicodedata
from collections import deque
from collections.abc import Iterator
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

Method = Literal["REQUEST", "CANCEL"]

PRODID = "-//calsync//calsync//EN"
ATTACHMENT_NAME = "invite.ics"


class InvitePolicy(email.policy.EmailPolicy):
    """``EmailPolicy`` that folds Subject, From and To itself when they hold non-ASCII text.

    CPython's folder loses or invents the space between two RFC 2047 encoded
    words (python/cpython gh-92081 and its follow-ups): "Session with éclairs"
    reached mail clients as "…withéclairs" for a few percent of mixed-script
    titles, and display names in From/To as often. Decoders drop the whitespace
    between adjacent encoded words (RFC 2047 §6.2), so here every space that
    belongs to the text is written inside an encoded word, and the blanks
    between encoded words are only separators and folding points.

    Other headers, ASCII-only values, named groups and non-ASCII addr-specs
    still go through the standard folder: the first two need no encoded words,
    the last two never occur in an invite.
    """

    def fold(self, name: str, value: object) -> str:
        folded = _fold_by_hand(name, value, self.linesep)
        return super().fold(name, value) if folded is None else folded

    def fold_binary(self, name: str, value: object) -> bytes:
        folded = _fold_by_hand(name, value, self.linesep)
        return super().fold_binary(name, value) if folded is None else folded.encode("ascii")


#: SMTP line endings, but 7-bit bodies: non-ASCII text goes quoted-printable or
#: base64 (RFC 6047 §2.5) instead of raw 8bit, which relays without 8BITMIME mangle.
#: The settings of ``email.policy.SMTP.clone(cte_type="7bit")``, with the folding above.
POLICY = InvitePolicy(linesep="\r\n", cte_type="7bit")

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


# -- Header folding (see InvitePolicy) --------------------------------------

_EW_PREFIX, _EW_SUFFIX = "=?utf-8?b?", "?="
_MAX_EW = 75  # RFC 2047 §2: an encoded word is at most 75 characters
_MAX_LINE = 76  # RFC 2047 §2: a line holding an encoded word is at most 76 characters
_ADDRESS_HEADERS = frozenset({"from", "to"})
#: Words that may stay as they are: VCHAR runs in unstructured text (RFC 5322
#: §3.2.5), atoms in a display-name phrase (§3.2.3). Anything else is encoded.
_UNSTRUCTURED_WORD = re.compile(r"[!-~]+")
_PHRASE_WORD = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+")
_LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")


def _fold_by_hand(name: str, value: object, linesep: str) -> str | None:
    """The folded header line(s) with ``linesep``, or None to leave it to the standard folder."""
    if not hasattr(value, "name"):  # a raw source value, not a header object we built
        return None
    key = name.lower()
    if key == "subject":
        text = str(value)
        if text.isascii():
            return None
        items = _text_items(text, _UNSTRUCTURED_WORD, first_room=_MAX_LINE - len(name) - 2)
    elif key in _ADDRESS_HEADERS:
        items = _address_items(value, first_room=_MAX_LINE - len(name) - 2)
        if items is None:
            return None
    else:
        return None
    return linesep.join(_fold_lines(f"{name}:", items)) + linesep


def _address_items(value: object, *, first_room: int) -> list[tuple[bool, str]] | None:
    """From/To as items: each display name as words and encoded words, then ``<addr-spec>``.

    None when the standard folder is right for it: all-ASCII, named groups, or an
    addr-spec that is not ASCII (encoded words may not appear in one, RFC 2047 §5).
    """
    groups = getattr(value, "groups", ())
    if any(group.display_name is not None for group in groups):
        return None
    mailboxes = [mailbox for group in groups for mailbox in group.addresses]
    if (not mailboxes or all(m.display_name.isascii() for m in mailboxes)
            or not all(m.addr_spec.isascii() for m in mailboxes)):
        return None
    items: list[tuple[bool, str]] = []
    for index, mailbox in enumerate(mailboxes):
        comma = "," if index < len(mailboxes) - 1 else ""
        if mailbox.display_name:
            room = first_room if not items else _MAX_LINE - 1
            items += _text_items(mailbox.display_name, _PHRASE_WORD, first_room=room)
            items.append((True, f"<{mailbox.addr_spec}>{comma}"))
        else:
            items.append((True, f"{mailbox.addr_spec}{comma}"))
    return items


def _text_items(text: str, plain: re.Pattern[str], *, first_room: int) -> list[tuple[bool, str]]:
    """``text`` as (is_plain, text) items that the folder joins with single spaces.

    A word matching ``plain`` stays readable. Every run of other words becomes
    one item to encode, *with the spaces inside the run*, because a decoder
    drops the blanks between two encoded words (RFC 2047 §6.2). A space next to
    a plain word may stay outside: the blank between an encoded word and a
    plain word is kept. Plain words therefore never touch an empty word (from
    a double space), a word too long for a line is encoded, and a word with
    ``=?`` or ``?=`` is encoded lest a decoder take it for an encoded word.
    Lone surrogates cannot be written in UTF-8 and become U+FFFD.
    """
    words = _LONE_SURROGATE.sub("\ufffd", text).split(" ")
    last = len(words) - 1

    def stays_plain(i: int) -> bool:
        word = words[i]
        room = first_room if i == 0 else _MAX_LINE - 1
        return (bool(plain.fullmatch(word)) and "=?" not in word and "?=" not in word and len(word) <= room
                and (i == 0 or words[i - 1] != "") and (i == last or words[i + 1] != ""))

    items: list[tuple[bool, str]] = []
    run: list[str] = []
    for i, word in enumerate(words):
        if stays_plain(i):
            if run:
                items.append((False, " ".join(run)))
                run = []
            items.append((True, word))
        else:
            run.append(word)
    if run:
        items.append((False, " ".join(run)))
    return [item for item in items if item[1]]


def _fold_lines(label: str, items: list[tuple[bool, str]]) -> list[str]:
    """Lines of at most 76 characters where possible, joined later with CRLF: a fold
    is CRLF + one space, so unfolding gives back exactly one blank (RFC 5322 §2.2.3).

    Nothing folds right after the label: Python 3.11 keeps the blank of such a
    fold as part of the value. A run is kept in one encoded word when it fits on
    a line, since each boundary between encoded words is one more place for a
    decoder to get §6.2 wrong (CPython gh-128110 adds a space there in a display
    name); longer runs fill the line, then whole lines.
    """
    lines = [label]
    full = _ew_capacity(_MAX_LINE - 1)
    for is_plain, text in items:
        can_fold = len(lines) > 1 or lines[0] != label
        if is_plain:
            if can_fold and len(lines[-1]) + 1 + len(text) > _MAX_LINE:
                lines.append("")
            lines[-1] += " " + text
            continue
        here = _ew_capacity(_MAX_LINE - len(lines[-1]) - 1)
        size = len(text.encode("utf-8"))
        if can_fold and size > here and (size <= full or here < 12):
            lines.append("")
            here = full
        for n, chunk in enumerate(_chunks(text, first=max(here, 4), rest=full)):
            if n:
                lines.append("")
            lines[-1] += " " + _encoded_word(chunk)
    return lines


def _ew_capacity(room: int) -> int:
    """How many UTF-8 bytes one base64 encoded word can carry in ``room`` characters."""
    return max(0, (min(room, _MAX_EW) - len(_EW_PREFIX) - len(_EW_SUFFIX)) // 4 * 3)


def _encoded_word(chunk: str) -> str:
    return f"{_EW_PREFIX}{base64.b64encode(chunk.encode('utf-8')).decode('ascii')}{_EW_SUFFIX}"


def _chunks(text: str, *, first: int, rest: int) -> Iterator[str]:
    """``text`` cut into pieces of at most ``first``, then ``rest``, UTF-8 bytes.

    Cuts fall between characters, never inside a UTF-8 sequence (RFC 2047 §5:
    each encoded word holds whole characters), and where possible between
    grapheme clusters, so no client that shows encoded words one by one sees an
    accent or an emoji modifier apart from its base character.
    """
    limit, piece, used = first, "", 0
    queue = deque(_clusters(text))
    while queue:
        part = queue.popleft()
        size = len(part.encode("utf-8"))
        if used + size <= limit or (not piece and len(part) == 1):
            piece, used = piece + part, used + size
        elif piece:
            yield piece
            limit, piece, used = rest, "", 0
            queue.appendleft(part)
        else:  # the cluster does not fit even an empty piece: cut it between characters
            queue.extendleft(reversed(part))
    if piece:
        yield piece


_ZWJ = "\u200d"


def _clusters(text: str) -> Iterator[str]:
    """Approximate grapheme clusters: a character joins the previous one if it is a
    combining mark, ZWJ, variation selector, emoji modifier or tag, or follows a ZWJ."""
    cluster = ""
    for char in text:
        code = ord(char)
        joins = (unicodedata.category(char) in ("Mn", "Mc", "Me") or char == _ZWJ or cluster.endswith(_ZWJ)
                 or 0xFE00 <= code <= 0xFE0F or 0x1F3FB <= code <= 0x1F3FF or 0xE0020 <= code <= 0xE007F)
        if cluster and not joins:
            yield cluster
            cluster = ""
        cluster += char
    if cluster:
        yield cluster


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
