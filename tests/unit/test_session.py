"""Validation of what the platform sends: every error names its field."""

from __future__ import annotations

import pytest

from sync.core.session import load_json, parse_session
from sync.errors import InvalidInput
from tests.support.factories import session_data


def errors_of(data) -> list[str]:
    with pytest.raises(InvalidInput) as exc:
        parse_session(data)
    return [str(e) for e in exc.value.errors]


def participants(*emails: str) -> list[dict]:
    return [{"user_id": f"u-{i}", "email": e} for i, e in enumerate(emails)]


@pytest.mark.parametrize(("override", "field", "reason"), [
    ({"start": "2026-12-01T15:00:00"}, "start", "needs a UTC offset"),
    ({"start": "tomorrow"}, "start", "valid datetime"),
    ({"end": "2026-12-01T14:00:00-05:00"}, "end", "must be after start"),
    ({"timezone": "Mars/Olympus_Mons"}, "timezone", "unknown IANA time zone"),
    ({"status": "postponed"}, "status", "must be one of"),
    ({"meeting_url": None, "location": None}, "meeting_url", "meeting_url, a location, or both"),
    ({"meeting_url": "http://zoom.us/j/1"}, "meeting_url", "https://"),
    ({"meeting_url": "https://zoom.us/j/1\r\nBcc: x@evil.example"}, "meeting_url", "control characters"),
    ({"participants": []}, "participants", "at least 1"),
    ({"participants": participants("not-an-address")}, "participants[0].email", "not a valid email"),
    ({"participants": participants("a@example.com", "A@example.com")}, "participants[1].email", "duplicate"),
    ({"participants": participants("Eve <eve@example.com>")}, "participants[0].email", "bare address"),
    ({"title": "Goals\r\nBcc: victim@example.com"}, "title", "control characters"),
    ({"title": "=?UTF-8?Q?=0A?=Bcc: x@evil.example"}, "title", "encoded-word"),
    ({"agenda_html": "<p>" + "x" * 1_000_000 + "</p>"}, "agenda_html", "at most"),
    ({"version": "3"}, "version", "valid integer"),
    ({"version": 2**63}, "version", "less than or equal to 9223372036854775807"),
    ({"id": ""}, "id", "at least 1"),
])
def test_bad_field_is_named(override, field, reason):
    errs = errors_of(session_data(**override))
    assert any(e.startswith(f"{field}: ") and reason in e for e in errs), errs


def test_participant_name_with_crlf_is_rejected():
    data = session_data()
    data["participants"][0]["name"] = "Ada\r\nBcc: x@evil.example"
    assert errors_of(data) == ["participants[0].name: must be a single line without control characters (CR, LF, tab…)"]


def test_participant_role_longer_than_its_column_is_rejected():
    # Given a role longer than the 64 characters the store keeps (PostgreSQL refused it with a DataError)
    data = session_data()
    data["participants"][0]["role"] = "r" * 65
    # When it is validated, Then the field is named
    assert errors_of(data) == ["participants[0].role: String should have at most 64 characters"]


def test_not_an_object():
    assert errors_of(["a"]) == ["session: expected a JSON object, got list"]


def test_agenda_html_is_cleaned_not_rejected():
    html = '<p onclick="x">Hi <a href="javascript:alert(1)">me</a></p><script>y</script>'
    s = parse_session(session_data(agenda_html=html))
    assert s.agenda_html == '<p>Hi <a rel="noopener noreferrer">me</a></p>'


def test_hybrid_session_keeps_both_link_and_place():
    s = parse_session(session_data(location="Room 4"))
    assert (s.meeting_url, s.location) == ("https://zoom.us/j/123456789", "Room 4")


def test_input_that_is_not_utf8_or_not_json():
    with pytest.raises(InvalidInput, match="input: not UTF-8"):
        load_json(b'{"id": "\xff"}')
    with pytest.raises(InvalidInput, match="input: not valid JSON"):
        load_json(b"{nope")
    assert load_json(b'{"id": "x"}') == [{"id": "x"}]
    assert load_json(b'[{"id": "x"}, 3]') == [{"id": "x"}, 3]


@pytest.mark.parametrize(("override", "field"), [
    # 23:00 at -05:00 on 31 Dec 9999 is year 10000 in UTC: the conversion itself overflows
    ({"start": "9999-12-31T23:00:00-05:00", "end": "9999-12-31T23:30:00-05:00"}, "start"),
    # 00:30 at +01:00 on 1 Jan 0001 is year 0 in UTC
    ({"start": "0001-01-01T00:30:00+01:00"}, "start"),
    ({"end": "9999-12-31T23:30:00-05:00"}, "end"),
    # Representable, but far outside any session and any calendar's comfort
    ({"start": "1899-12-31T23:59:59Z"}, "start"),
    ({"end": "9001-01-01T00:00:00Z"}, "end"),
])
def test_time_out_of_range_is_a_field_error(override, field):
    # Given a session whose start or end is (or becomes, in UTC) an absurd year
    data = session_data(**override)
    # When it is validated
    errs = errors_of(data)
    # Then the field is named, instead of an OverflowError escaping
    assert any(e.startswith(f"{field}: ") and "between the years 1900 and 9000" in e for e in errs), errs


def test_time_range_edges_are_accepted():
    # Given a session at the very edges of the accepted range (in UTC)
    data = session_data(start="1900-01-01T00:00:00Z", end="9000-12-31T23:59:59Z")
    # When it is validated
    s = parse_session(data)
    # Then it passes
    assert (s.start.year, s.end.year) == (1900, 9000)


def test_largest_version_is_accepted():
    # Given the largest version a BigInteger column holds
    # When it is validated, Then it passes unchanged
    assert parse_session(session_data(version=2**63 - 1)).version == 2**63 - 1
