"""iMIP invites: MIME shape, iTIP properties, the recipient's time, and injection attempts.

Every test serialises the message to bytes and parses it back, because what
matters is what a mail client receives, not the in-memory object.
"""

from __future__ import annotations

import base64
import dataclasses
import email
import email.policy
import re
from datetime import UTC, datetime
from email.message import EmailMessage

import pytest
import vobject
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from icalendar import Calendar

from sync.core.render import Recipient, RenderedEvent
from sync.mail.headers import POLICY
from sync.mail.imip import build_invite, format_when

ORGANIZER = "sessions@calsync.example"
DTSTAMP = datetime(2026, 11, 21, 9, 30, tzinfo=UTC)


def make_event(**overrides: object) -> RenderedEvent:
    """The contract's example session (15:00 New York = 20:00 London) as the mentee's copy."""
    recipient = Recipient(user_id="u-2", email="mentee@example.com", name="Alan Turing", timezone="Europe/London")
    fields: dict[str, object] = {
        "session_id": "sess-42",
        "uid": "3b0c9c1e-0000-5000-8000-000000000042@calsync",
        "title": "Session 2: Setting goals",
        "program": "Spring Cohort",
        "start": datetime(2026, 12, 1, 20, 0, tzinfo=UTC),
        "end": datetime(2026, 12, 1, 21, 0, tzinfo=UTC),
        "timezone": "America/New_York",
        "meeting_url": "https://zoom.us/j/123456789",
        "location": "Room 4",
        "agenda_html": "<p>Review the <strong>mentorship agreement</strong></p>",
        "agenda_text": "Review the mentorship agreement",
        "view_url": "https://platform.example/sessions/sess-42",
        "cancelled": False,
        "recipient": recipient,
    }
    fields.update(overrides)
    return RenderedEvent(**fields)  # type: ignore[arg-type]


def received(event: RenderedEvent, method: str = "REQUEST", sequence: int = 0) -> tuple[bytes, EmailMessage]:
    """The invite as raw bytes and as a mail client parses them."""
    raw = build_invite(event, method=method, sequence=sequence, organizer=ORGANIZER,  # type: ignore[arg-type]
                       dtstamp=DTSTAMP).as_bytes()
    return raw, email.message_from_bytes(raw, policy=email.policy.default)  # type: ignore[return-value]


def part(msg: EmailMessage, content_type: str) -> EmailMessage:
    (found,) = [p for p in msg.walk() if p.get_content_type() == content_type]
    return found  # type: ignore[return-value]


def calendar_of(msg: EmailMessage) -> Calendar:
    return Calendar.from_ical(part(msg, "text/calendar").get_content())


def header_block(raw: bytes) -> list[bytes]:
    """The top-level header lines, with folded continuations joined to their header."""
    head = raw.split(b"\r\n\r\n", 1)[0]
    return head.replace(b"\r\n ", b" ").replace(b"\r\n\t", b" ").split(b"\r\n")


@pytest.mark.parametrize("method", ["REQUEST", "CANCEL"])
def test_mime_tree_is_mixed_alternative_then_ics_attachment(method: str):
    # Given the mentee's copy of a session
    # When the invite is built and parsed back
    _, msg = received(make_event(), method)
    # Then the parts come in the order Outlook and Gmail look for them
    assert [p.get_content_type() for p in msg.walk()] == [
        "multipart/mixed", "multipart/alternative", "text/plain", "text/html", "text/calendar",
        "application/ics"]
    # And the calendar part is inline, utf-8, with a method equal to the object's METHOD
    cal_part = part(msg, "text/calendar")
    assert cal_part.get_content_disposition() is None
    assert cal_part.get_param("method") == method == str(calendar_of(msg)["METHOD"])
    for subtype in ("text/plain", "text/html", "text/calendar"):
        assert part(msg, subtype).get_content_charset() == "utf-8"
    # And the attachment is the same calendar, base64, named invite.ics
    attachment = part(msg, "application/ics")
    assert attachment.get_content_disposition() == "attachment"
    assert attachment.get_filename() == "invite.ics"
    assert attachment["Content-Transfer-Encoding"] == "base64"
    assert Calendar.from_ical(attachment.get_content()) == calendar_of(msg)


@pytest.mark.parametrize("method", ["REQUEST", "CANCEL"])
def test_calendar_parses_cleanly_in_icalendar_and_vobject(method: str):
    # Given an invite with non-ASCII text
    event = make_event(title="Zoë’s goals — 目標", agenda_text="Café ☕", agenda_html="<p>Café ☕</p>")
    # When its calendar part is parsed by both libraries
    _, msg = received(event, method, sequence=3)
    ics = part(msg, "text/calendar").get_content()
    cal = Calendar.from_ical(ics)
    # Then no component has parse errors and vobject's validator accepts it
    assert all(component.errors == [] for component in cal.walk())
    vobject.readOne(ics, validate=True)
    (vevent,) = cal.events
    assert str(vevent["SUMMARY"]) == "Zoë’s goals — 目標"


def test_request_has_the_itip_properties_and_only_the_recipient_as_attendee():
    # Given the mentee's copy
    # When a REQUEST is built with sequence 2
    _, msg = received(make_event(), "REQUEST", sequence=2)
    cal = calendar_of(msg)
    (vevent,) = cal.events
    ical = vevent.to_ical().decode()
    # Then the VCALENDAR and VEVENT carry what RFC 5546 §3.2.2 requires
    assert str(cal["PRODID"]) == "-//calsync//calsync//EN" and str(cal["VERSION"]) == "2.0"
    assert str(vevent["UID"]) == "3b0c9c1e-0000-5000-8000-000000000042@calsync"
    assert int(vevent["SEQUENCE"]) == 2 and str(vevent["X-MICROSOFT-CDO-APPT-SEQUENCE"]) == "2"
    assert vevent["DTSTAMP"].dt == DTSTAMP
    assert str(vevent["STATUS"]) == "CONFIRMED" and str(vevent["TRANSP"]) == "OPAQUE"
    assert str(vevent["URL"]) == "https://platform.example/sessions/sess-42"
    assert str(vevent["LOCATION"]) == "Room 4 · https://zoom.us/j/123456789"
    # And times are UTC with no VTIMEZONE
    assert "DTSTART:20261201T200000Z" in ical and "DTEND:20261201T210000Z" in ical
    assert not list(cal.walk("VTIMEZONE"))
    # And the organizer is the service, the one attendee is the recipient, asked to reply
    assert str(vevent["ORGANIZER"]) == f"mailto:{ORGANIZER}"
    assert vevent["ORGANIZER"].params["CN"] == "Spring Cohort sessions"
    (attendee,) = vevent.attendees
    assert str(attendee) == "mailto:mentee@example.com"
    assert dict(attendee.params) == {"CN": "Alan Turing", "CUTYPE": "INDIVIDUAL", "ROLE": "REQ-PARTICIPANT",
                                     "PARTSTAT": "NEEDS-ACTION", "RSVP": "TRUE"}


def test_cancel_has_status_cancelled_and_the_given_sequence():
    # Given the mentee's copy of a session that was cancelled
    # When a CANCEL is built with sequence 3
    _, msg = received(make_event(cancelled=True), "CANCEL", sequence=3)
    cal = calendar_of(msg)
    (vevent,) = cal.events
    # Then it cancels the same UID at the new sequence, still naming the attendee
    assert str(cal["METHOD"]) == "CANCEL"
    assert str(vevent["STATUS"]) == "CANCELLED" and int(vevent["SEQUENCE"]) == 3
    assert str(vevent["UID"]) == make_event().uid
    (attendee,) = vevent.attendees
    assert str(attendee) == "mailto:mentee@example.com" and "RSVP" not in attendee.params
    # And both bodies and the subject say it was cancelled
    assert msg["Subject"].startswith("Cancelled: Session 2: Setting goals")
    assert "This session has been cancelled." in part(msg, "text/plain").get_content()
    assert "This session has been cancelled." in part(msg, "text/html").get_content()


def test_description_is_plain_text_and_x_alt_desc_carries_the_agenda_html():
    # Given an agenda with markup
    # When the invite is built
    _, msg = received(make_event())
    (vevent,) = calendar_of(msg).events
    # Then DESCRIPTION has the agenda text, the join link and the view link, without tags
    description = str(vevent["DESCRIPTION"])
    assert description == ("Review the mentorship agreement\n\nJoin: https://zoom.us/j/123456789\n\n"
                           "View & edit: https://platform.example/sessions/sess-42")
    # And X-ALT-DESC is the sanitised HTML, typed text/html
    alt = vevent["X-ALT-DESC"]
    assert alt.params["FMTTYPE"] == "text/html"
    assert "<p>Review the <strong>mentorship agreement</strong></p>" in str(alt)


def test_bodies_show_the_time_in_the_recipients_zone():
    # Given a 15:00 New York session, and a mentee in London
    event = make_event()
    # When the invite is built
    _, msg = received(event)
    text, html = part(msg, "text/plain").get_content(), part(msg, "text/html").get_content()
    # Then both bodies state the London time with the zone named
    when = "Tuesday 1 December 2026, 20:00–21:00 GMT (Europe/London)"
    assert format_when(event) == when
    assert when in text and when in html
    # And the subject carries the London date
    assert msg["Subject"] == "Invitation: Session 2: Setting goals — Tuesday 1 December 2026"


def test_time_line_spells_out_both_ends_when_the_session_crosses_midnight_locally():
    # Given a session from 23:30 to 00:30 for someone in Tokyo (UTC+9)
    event = make_event(start=datetime(2026, 12, 1, 14, 30, tzinfo=UTC), end=datetime(2026, 12, 1, 15, 30, tzinfo=UTC),
                       recipient=dataclasses.replace(make_event().recipient, timezone="Asia/Tokyo"))
    # When the time line is formatted
    # Then both days are named
    assert format_when(event) == ("Tuesday 1 December 2026, 23:30 JST – Wednesday 2 December 2026, 00:30 JST "
                                  "(Asia/Tokyo)")


def test_bodies_carry_link_place_agenda_and_view_link_with_html_escaped():
    # Given a title with HTML-special characters
    event = make_event(title="Goals <script>alert(1)</script> & more")
    # When the invite is built
    _, msg = received(event)
    text, html = part(msg, "text/plain").get_content(), part(msg, "text/html").get_content()
    # Then the plain body has everything verbatim
    for expected in ("Goals <script>alert(1)</script> & more", "Where: Room 4", "Review the mentorship agreement",
                     "Join: https://zoom.us/j/123456789", "View & edit: https://platform.example/sessions/sess-42"):
        assert expected in text
    # And the HTML body escapes the title but keeps the sanitised agenda markup and real links
    assert "<script>" not in html and "Goals &lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in html
    assert "<p>Review the <strong>mentorship agreement</strong></p>" in html
    assert '<a href="https://zoom.us/j/123456789">' in html
    assert '<a href="https://platform.example/sessions/sess-42">' in html


def test_headers_address_one_recipient_from_the_service():
    # Given the mentee's copy
    # When the invite is built
    _, msg = received(make_event())
    # Then To is only the recipient, From is the service with the program's name
    assert msg["To"].addresses[0].addr_spec == "mentee@example.com" and len(msg["To"].addresses) == 1
    assert msg["To"].addresses[0].display_name == "Alan Turing"
    assert str(msg["From"]) == "Spring Cohort sessions <sessions@calsync.example>"
    assert msg["Message-ID"].endswith("@calsync.example>")
    assert msg["Date"].datetime == DTSTAMP
    # And nothing that could stop a mail client from processing the invite
    assert msg["Auto-Submitted"] is None and msg["Cc"] is None and msg["Bcc"] is None


def test_the_recipient_is_never_the_organizer():
    # Given a copy whose recipient is the service address itself (case aside)
    event = make_event(recipient=dataclasses.replace(make_event().recipient, email="Sessions@Calsync.example"))
    # When an invite is built, Then it is refused
    with pytest.raises(ValueError, match="organizer"):
        build_invite(event, method="REQUEST", sequence=0, organizer=ORGANIZER, dtstamp=DTSTAMP)


def test_naive_times_are_refused_rather_than_guessed():
    # Given a dtstamp without a zone
    # When an invite is built, Then it is refused instead of assuming the server's zone
    with pytest.raises(ValueError, match="naive"):
        build_invite(make_event(), method="REQUEST", sequence=0, organizer=ORGANIZER,
                     dtstamp=datetime(2026, 11, 21, 9, 30))


@pytest.mark.parametrize("payload", ["\r\nBcc: x@evil.example", "=?UTF-8?Q?=0A?=Bcc: x@evil.example",
                                     "\nBcc: x@evil.example", "\u2028Bcc: x@evil.example"])
def test_header_injection_through_title_or_name_adds_no_header(payload: str):
    # Given a title and a recipient name carrying an injection attempt
    event = make_event(title=f"Goals{payload}",
                       recipient=dataclasses.replace(make_event().recipient, name=f"Alan{payload}"))
    # When the invite is serialised
    raw, msg = received(event)
    # Then no Bcc header exists, parsed or raw, and the header block has only the expected fields
    assert msg["Bcc"] is None
    names = [line.split(b":", 1)[0].lower() for line in header_block(raw)]
    assert names == [b"from", b"to", b"subject", b"date", b"message-id", b"mime-version", b"content-type"]
    assert msg["Subject"].startswith("Invitation: Goals") and "Bcc: x@evil.example" in msg["Subject"]


def test_agenda_cannot_inject_a_calendar_property():
    # Given agenda text and HTML carrying a CRLF and a forged ATTENDEE line
    forged = "\r\nATTENDEE:mailto:evil@x.example\r\nORGANIZER:mailto:evil@x.example"
    event = make_event(agenda_text=f"Agenda{forged}", agenda_html=f"<p>Agenda</p>{forged}")
    # When the invite is built and its calendar parsed back
    _, msg = received(event)
    (vevent,) = calendar_of(msg).events
    # Then the forged lines stay inside DESCRIPTION and X-ALT-DESC
    assert [str(a) for a in vevent.attendees] == ["mailto:mentee@example.com"]
    assert str(vevent["ORGANIZER"]) == f"mailto:{ORGANIZER}"
    assert "ATTENDEE:mailto:evil@x.example" in str(vevent["X-ALT-DESC"])
    assert "ATTENDEE:mailto:evil@x.example" in str(vevent["DESCRIPTION"])


def test_quotes_in_names_do_not_reach_cn_as_caret_escapes():
    # Given a recipient name with double quotes
    event = make_event(recipient=dataclasses.replace(make_event().recipient, name='Alan "Prof" Turing'))
    # When the invite is built
    _, msg = received(event)
    (vevent,) = calendar_of(msg).events
    # Then CN reads naturally in clients without RFC 6868 support
    (attendee,) = vevent.attendees
    assert attendee.params["CN"] == "Alan 'Prof' Turing"
    assert b"^'" not in part(msg, "text/calendar").get_content().encode()


def test_non_ascii_bodies_are_not_sent_as_raw_8bit():
    # Given non-ASCII text everywhere
    event = make_event(title="Zoë ☕", agenda_text="Café", agenda_html="<p>Café</p>")
    # When the invite is serialised
    raw, msg = received(event)
    # Then every part is 7-bit on the wire (RFC 6047 §2.5) and still decodes to the text
    assert max(raw) < 0x80
    assert "Zoë ☕" in part(msg, "text/plain").get_content()
    assert "Café" in str(calendar_of(msg).events[0]["DESCRIPTION"])


# Words as people type them into titles and names: ASCII, accented Latin, Greek,
# CJK and emoji (outside the BMP, some of them several code points long), with
# ASCII punctuation a display name needs quoting for. No control characters and
# no "=?": intake rejects both.
_WORD_PIECES = st.one_of(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E),                            # printable ASCII
    st.sampled_from("éèêëàâäçñöøüÿßÉÈÖØÜÅåæœÆŒłŁčšžČŠŽőű’—"),                          # Latin, typography
    st.characters(min_codepoint=0x0391, max_codepoint=0x03C9, categories=["L"]),    # Greek
    st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF),                        # CJK ideographs
    st.characters(min_codepoint=0x1F300, max_codepoint=0x1FAFF, categories=["So"]),  # emoji
    st.sampled_from(["e\u0301", "👩\u200d💻", "👍🏽", "🇫🇷", "❤\ufe0f"]),              # multi-code-point
)
_WORD = st.lists(_WORD_PIECES, min_size=1, max_size=24).map("".join)


def mixed_script_text(max_size: int) -> st.SearchStrategy[str]:
    """Words joined by single spaces, at most ``max_size`` characters, as intake would accept them."""
    return st.lists(_WORD, min_size=1, max_size=40).map(lambda words: " ".join(words)[:max_size].strip()).filter(
        lambda text: text != "" and "=?" not in text)


_ENCODED_WORD = re.compile(rb"=\?utf-8\?b\?([A-Za-z0-9+/=]*)\?=")
_ADJACENT_ENCODED_WORDS = re.compile(r"\?=\s+=\?")


def display_names(msg: EmailMessage, header: str) -> tuple[str, str]:
    """The one mailbox's display name as CPython's structured parser reads it, and as
    an RFC 2047 §6.2 decoder shows it.

    They differ only where two encoded words are adjacent: CPython 3.11's address
    parser keeps the blank between them as a space (python/cpython gh-128110), where
    §6.2 (and mail clients) drop it. Its unstructured parser does follow §6.2, and the
    phrase ``imip`` writes is plain atoms and encoded words only, so decoding the raw
    phrase as unstructured text gives what a conforming client shows.
    """
    (mailbox,) = msg[header].addresses
    raw = re.sub(r"\r\n(?=[ \t])", "", dict(msg.raw_items())[header])
    phrase = raw.rpartition(" <")[0].strip() if raw.endswith(">") else ""
    if "=?" not in phrase:
        return mailbox.display_name, mailbox.display_name
    return mailbox.display_name, str(email.policy.default.header_factory("X-Phrase", phrase))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(title=mixed_script_text(200), name=mixed_script_text(120), program=mixed_script_text(60))
@example(title="Ελληνικά Q&A Session with éclairs", name="Zoë Ünal-Øster 日本", program="Spring Cohort")
@example(title="0🌀 🌀 0一🌀 🌀 0一🌀 é", name="00 00000000é 0000éé🌀🌀🌀🌀🌀🌀", program="0 000🌀🌀🌀🌀")
def test_subject_and_display_names_decode_exactly_whatever_the_script(title: str, name: str, program: str):
    # Given a session whose title, program and recipient name mix scripts
    event = make_event(title=title, program=program,
                       recipient=dataclasses.replace(make_event().recipient, name=name))
    # When the invite is serialised and a mail client parses it back
    raw, msg = received(event)
    head = raw.split(b"\r\n\r\n", 1)[0]
    context = head.decode()
    # Then the header is 7-bit; lines with encoded words fit in 76 characters, others in 78
    assert max(head) < 0x80
    for line in head.split(b"\r\n"):
        assert len(line) <= (76 if b"=?" in line else 78), context
    # And every encoded word is at most 75 characters and holds whole UTF-8 characters (RFC 2047 §2, §5)
    for match in _ENCODED_WORD.finditer(head):
        assert len(match.group(0)) <= 75, context
        base64.b64decode(match.group(1), validate=True).decode("utf-8")  # strict: no split sequence
    # And the Subject decodes to exactly the subject that was built, spaces included
    assert str(msg["Subject"]) == f"Invitation: {title} — Tuesday 1 December 2026", context
    # And the To and From display names decode exactly too, and each names the right address
    assert msg["To"].addresses[0].addr_spec == "mentee@example.com"
    assert msg["From"].addresses[0].addr_spec == ORGANIZER
    for header, expected in (("To", name), ("From", f"{program} sessions")):
        structured, shown = display_names(msg, header)
        assert shown == expected, context
        if _ADJACENT_ENCODED_WORDS.search(dict(msg.raw_items())[header]):
            # gh-128110: CPython's own parser adds a space between adjacent encoded words, nothing else
            assert structured.replace(" ", "") == expected.replace(" ", ""), context
        else:
            assert structured == expected, context


def test_title_space_before_an_accented_word_survives_header_folding():
    # Given a title whose words CPython's folder used to glue together (gh-92081):
    # it came out as "…Session withéclairs"
    event = make_event(title="Ελληνικά Q&A Session with éclairs",
                       recipient=dataclasses.replace(make_event().recipient, name="Zoë Ünal-Øster 日本"))
    # When the invite is serialised and a mail client parses it back
    raw, msg = received(event)
    # Then the subject reads exactly as built, "with éclairs" with its space
    assert msg["Subject"] == "Invitation: Ελληνικά Q&A Session with éclairs — Tuesday 1 December 2026"
    # And the recipient's name reads exactly as given
    assert msg["To"].addresses[0].display_name == "Zoë Ünal-Øster 日本"
    assert msg["To"].addresses[0].addr_spec == "mentee@example.com"
    # And the header went out as 7-bit encoded words, not raw UTF-8
    assert max(raw.split(b"\r\n\r\n", 1)[0]) < 0x80 and b"=?utf-8?b?" in raw


def test_the_invite_policy_keeps_the_smtp_settings():
    # Given the policy invites are built with
    # Then it is still SMTP's: CRLF line ends, 7-bit bodies, 78-character lines
    assert (POLICY.linesep, POLICY.cte_type, POLICY.max_line_length, POLICY.utf8) == ("\r\n", "7bit", 78, False)
    # And it still folds headers it has no reason to touch, ASCII ones included, the standard way
    assert POLICY.fold("Subject", "Session 2: Setting goals") == "Subject: Session 2: Setting goals\r\n"


def test_an_update_says_so_in_its_subject():
    # Given a session the recipient already holds
    event = make_event()
    # When a first invite, an update and a cancellation are built
    first = build_invite(event, method="REQUEST", sequence=0, organizer=ORGANIZER, dtstamp=DTSTAMP)
    update = build_invite(event, method="REQUEST", sequence=1, organizer=ORGANIZER, dtstamp=DTSTAMP, update=True)
    cancel = build_invite(event, method="CANCEL", sequence=2, organizer=ORGANIZER, dtstamp=DTSTAMP, update=True)
    # Then each subject tells them apart at a glance
    assert str(first["Subject"]).startswith("Invitation: Session 2: Setting goals")
    assert str(update["Subject"]).startswith("Updated invitation: Session 2: Setting goals")
    assert str(cancel["Subject"]).startswith("Cancelled: Session 2: Setting goals")
