"""The reliability checker on hand-built inputs: it must pass a correct end state and fail each wrong one.

The end-to-end chaos test is only as good as this judge, so every way a calendar can be
wrong (missing, duplicated, outdated, not withdrawn, on the wrong channel or address, an
invite ordering a calendar app would ignore) is shown to fail here, in milliseconds.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from tests.reliability.calendar_view import (
    EventCopy,
    Invite,
    Route,
    Seen,
    SessionTruth,
    Truth,
    check,
    google_copy,
    identical_resends,
    inbox_view,
    outlook_copy,
    parse_invites,
)

T0 = datetime(2027, 3, 1, 15, tzinfo=timezone.utc)
STAMP = datetime(2027, 1, 1, 12, tzinfo=timezone.utc)


def truth(**over: object) -> Truth:
    """s-1 (scheduled) with ann (Google), bob (Outlook) and cid (email); s-2 cancelled with cid."""
    base: dict[str, object] = dict(
        sessions={
            "s-1": SessionTruth("s-1", "scheduled", "Goals", T0,
                                {"ann": "ann@p.example", "bob": "bob@p.example", "cid": "cid@p.example"}),
            "s-2": SessionTruth("s-2", "cancelled", "Kickoff", T0 + timedelta(days=1), {"cid": "cid@p.example"}),
        },
        routes={"ann": Route("google", "ann@gmail.example"), "bob": Route("outlook", "bob@outlook.example")},
        addresses={"ann": frozenset({"ann@p.example"}), "bob": frozenset({"bob@p.example"}),
                   "cid": frozenset({"cid@p.example", "cid.old@p.example"})},
        uids={"uid-1": "s-1", "uid-2": "s-2"},
    )
    base.update(over)
    return Truth(**base)  # type: ignore[arg-type]


def gev(session: str = "s-1", user: str = "ann", account: str = "ann@gmail.example", title: str = "Goals",
        start: datetime = T0, eid: str = "cs0001") -> EventCopy:
    return EventCopy("google", account, eid, session, user, title, start)


def oev(session: str = "s-1", user: str = "bob", title: str = "Goals", start: datetime = T0) -> EventCopy:
    return EventCopy("outlook", "bob@outlook.example", "AAMkAG1", session, user, title, start)


def inv(to: str = "cid@p.example", uid: str = "uid-1", method: str = "REQUEST", seq: int = 0,
        stamp: datetime = STAMP, title: str = "Goals", start: datetime = T0, arrival: int = 0) -> Invite:
    return Invite(to, uid, method, seq, stamp, title, start, arrival)


def good_seen() -> Seen:
    """Everyone sees exactly s-1; cid got s-2 and later its CANCEL."""
    return Seen(events=[gev(), oev()], invites=[
        inv(arrival=1),
        inv(uid="uid-2", title="Kickoff", start=T0 + timedelta(days=1), arrival=2),
        inv(uid="uid-2", method="CANCEL", seq=1, title="Kickoff", start=T0 + timedelta(days=1), arrival=3),
    ])


def test_a_correct_end_state_passes():
    # Given every participant showing exactly one current copy on their channel
    # When the checker judges it
    verdict = check(truth(), good_seen())
    # Then nothing is wrong, and every pair is accounted for
    assert verdict.ok, verdict.summary()
    assert verdict.counts() == {"pairs": 4, "shown_ok": 3, "absent_ok": 1, "missing": 0, "duplicate": 0,
                                "stale": 0, "stranded_expected": 0, "anomalies": 0}


def test_a_missing_invite_fails_and_names_the_address():
    # Given cid's REQUEST for s-1 never arrived
    seen = good_seen()
    seen = Seen(seen.events, seen.invites[1:])
    # When judged
    verdict = check(truth(), seen)
    # Then it is one missing copy, described with what was expected
    assert not verdict.ok
    assert (verdict.missing, verdict.duplicate, verdict.stale) == (1, 0, 0)
    [problem] = verdict.problems
    assert problem.line() == ('s-1 × cid: missing: expected email cid@p.example: "Goals" at 2027-03-01 15:00Z; '
                              "found nothing")


def test_two_events_for_one_person_are_a_duplicate():
    # Given ann's calendar holds the session twice (a retried insert under a second id)
    seen = Seen([gev(), gev(eid="cs0002"), oev()], good_seen().invites)
    # When judged
    verdict = check(truth(), seen)
    # Then one duplicate, and the line shows both events
    assert (verdict.missing, verdict.duplicate, verdict.stale) == (0, 1, 0)
    assert "cs0001" in verdict.problems[0].found and "cs0002" in verdict.problems[0].found


def test_an_invite_next_to_a_calendar_event_is_a_duplicate():
    # Given ann (on Google) also still shows an emailed REQUEST for s-1
    t = truth(addresses={**truth().addresses, "ann": frozenset({"ann@p.example"})})
    seen = Seen(good_seen().events, [*good_seen().invites, inv(to="ann@p.example", arrival=9)])
    # When judged
    verdict = check(t, seen)
    # Then it is a duplicate, not a pass
    assert verdict.duplicate == 1 and not verdict.ok
    assert verdict.problems[0].kinds == ("duplicate",)


def test_an_outdated_title_or_time_is_stale():
    # Given bob's Outlook event kept the old title and ann's Google event the old time
    seen = Seen([gev(start=T0 - timedelta(hours=1)), oev(title="Goals (old)")], good_seen().invites)
    # When judged
    verdict = check(truth(), seen)
    # Then both are stale
    assert verdict.stale == 2 and verdict.missing == verdict.duplicate == 0
    assert {p.user_id for p in verdict.problems} == {"ann", "bob"}


def test_a_copy_on_a_channel_no_longer_used_is_missing_plus_stale():
    # Given bob moved to email (his integration is no longer active) but his Outlook event was never deleted
    # and no invite was sent
    t = truth(routes={"ann": Route("google", "ann@gmail.example")})
    # When judged
    verdict = check(t, good_seen())
    # Then the invite is missing and the Outlook copy is stale
    [problem] = verdict.problems
    assert problem.kinds == ("missing", "stale")
    assert problem.expected.startswith("email bob@p.example")
    assert problem.found.startswith("outlook bob@outlook.example")


def test_a_cancelled_session_still_shown_fails():
    # Given s-2 is cancelled but cid's last message for it is the REQUEST
    seen = Seen(good_seen().events, good_seen().invites[:2])
    # When judged
    verdict = check(truth(), seen)
    # Then it was not withdrawn
    [problem] = verdict.problems
    assert problem.session_id == "s-2" and problem.kinds == ("stale",)
    assert problem.expected == "nothing (session cancelled)"


def test_a_removed_participant_with_a_live_event_fails():
    # Given ann was removed from s-1 but her Google event stays
    sessions = dict(truth().sessions)
    sessions["s-1"] = SessionTruth("s-1", "scheduled", "Goals", T0, {"bob": "bob@p.example", "cid": "cid@p.example"})
    # When judged
    verdict = check(truth(sessions=sessions), good_seen())
    # Then the leftover copy is stale
    assert verdict.stale == 1
    assert verdict.problems[0].expected == "nothing (not a participant)"


def test_an_old_address_never_cancelled_fails():
    # Given cid changed address: the new address got the REQUEST, the old one never got a CANCEL
    sessions = dict(truth().sessions)
    sessions["s-1"] = SessionTruth("s-1", "scheduled", "Goals", T0, {
        "ann": "ann@p.example", "bob": "bob@p.example", "cid": "cid.new@p.example"})
    t = truth(sessions=sessions, addresses={**truth().addresses,
                                            "cid": frozenset({"cid@p.example", "cid.new@p.example"})})
    seen = Seen(good_seen().events, [*good_seen().invites, inv(to="cid.new@p.example", arrival=5)])
    # When judged
    verdict = check(t, seen)
    # Then the person sees two copies
    assert verdict.duplicate == 1
    assert "cid@p.example" in verdict.problems[0].found and "cid.new@p.example" in verdict.problems[0].found


def test_invite_ordering_follows_sequence_then_dtstamp():
    # Given a CANCEL:2, then a late REQUEST:1 (lower SEQUENCE: ignored by the app),
    # and for another UID a REQUEST and a newer-DTSTAMP CANCEL at the same SEQUENCE
    later = STAMP + timedelta(seconds=5)
    threads = inbox_view([
        inv(seq=0, arrival=1), inv(method="CANCEL", seq=2, arrival=2), inv(seq=1, arrival=3),
        inv(uid="uid-2", seq=3, stamp=later, arrival=4), inv(uid="uid-2", method="CANCEL", seq=3, arrival=5),
    ])
    # Then the first stays cancelled and the second stays shown (its REQUEST has the later DTSTAMP)
    assert not threads[("cid@p.example", "uid-1")].live
    assert threads[("cid@p.example", "uid-1")].history == "REQUEST:0 → CANCEL:2 → REQUEST:1"
    assert threads[("cid@p.example", "uid-2")].live


def test_an_uncancel_with_a_reused_sequence_is_missing():
    # Given s-1 was cancelled (CANCEL:1) and un-cancelled, but the new REQUEST reused SEQUENCE 1
    # with an older DTSTAMP than the CANCEL: a calendar app keeps the CANCEL
    seen = Seen(good_seen().events, [
        inv(arrival=1), inv(method="CANCEL", seq=1, stamp=STAMP + timedelta(seconds=2), arrival=2),
        inv(seq=1, stamp=STAMP + timedelta(seconds=1), arrival=3), *good_seen().invites[1:]])
    # When judged
    verdict = check(truth(), seen)
    # Then cid's copy is missing
    assert verdict.missing == 1 and verdict.problems[0].user_id == "cid"


def test_a_copy_behind_a_dead_token_is_stranded_not_duplicate():
    # Given ann's Google token was revoked and never reconnected: calsync moved her to email
    t = truth(routes={"bob": Route("outlook", "bob@outlook.example")},
              dead=frozenset({("google", "ann@gmail.example")}))
    seen = Seen(good_seen().events, [*good_seen().invites, inv(to="ann@p.example", arrival=7)])
    # When judged
    verdict = check(t, seen)
    # Then her old event counts as stranded (expected), and nothing fails
    assert verdict.ok, verdict.summary()
    assert verdict.stranded == 1 and verdict.duplicate == 0
    # But the same copy behind a live token is a duplicate
    alive = check(truth(routes={"bob": Route("outlook", "bob@outlook.example")}), seen)
    assert alive.duplicate == 1 and not alive.ok


def test_unknown_tags_and_addresses_are_anomalies():
    # Given an event tagged for a session the store does not have, and an invite to a stranger
    seen = Seen([*good_seen().events, gev(session="s-9")],
                [*good_seen().invites, inv(to="stranger@x.example", arrival=8)])
    # When judged
    verdict = check(truth(), seen)
    # Then the verdict fails on them even though every pair is fine
    assert not verdict.ok and len(verdict.anomalies) == 2 and not verdict.problems


def test_summary_lists_each_problem_on_one_line():
    # Given two problems
    seen = Seen([gev(title="Old")], good_seen().invites)
    # When summarised
    text = check(truth(), seen).summary()
    # Then the headline counts them and each is one line
    assert text.splitlines()[0].startswith("missing=1 duplicate=0 stale=1")
    assert len(text.splitlines()) == 3


def test_parsers_read_the_emulators_and_imip_shapes():
    # Given a Google event, an Outlook event (as the emulators return them) and an iMIP message
    g = {"id": "cs1", "summary": "Goals", "start": {"dateTime": "2027-03-01T16:00:00+01:00"},
         "extendedProperties": {"private": {"calsyncSession": "s-1", "calsyncUser": "ann"}}}
    o = {"id": "AAMk1", "subject": "Goals", "start": {"dateTime": "2027-03-01T15:00:00.0000000", "timeZone": "UTC"},
         "singleValueExtendedProperties": [{"id": "String {3c0e5f5c-7c71-4a39-9b0a-6f1c2d1b8e44} Name "
                                                  "calsyncPlacement", "value": "s-1/bob"}]}
    ics = ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\nMETHOD:CANCEL\r\nBEGIN:VEVENT\r\nUID:uid-1\r\n"
           "SEQUENCE:4\r\nDTSTAMP:20270101T120000Z\r\nDTSTART:20270301T150000Z\r\nSUMMARY:Goals\r\n"
           "END:VEVENT\r\nEND:VCALENDAR\r\n")
    raw = ("From: s@c.example\r\nTo: cid@p.example\r\nSubject: x\r\nMIME-Version: 1.0\r\n"
           "Content-Type: text/calendar; method=CANCEL; charset=UTF-8\r\n\r\n" + ics).encode()
    # When parsed
    gc, oc = google_copy("Ann@gmail.example", g), outlook_copy("bob@outlook.example", o)
    [invite] = parse_invites(raw, ["CID@p.example"], arrival=3)
    # Then they carry the session, person, title and instant
    assert gc is not None
    assert (gc.session_id, gc.user_id, gc.account, gc.start) == ("s-1", "ann", "ann@gmail.example", T0)
    assert oc is not None and (oc.session_id, oc.user_id, oc.start) == ("s-1", "bob", T0)
    assert (invite.recipient, invite.uid, invite.method, invite.sequence, invite.start) == (
        "cid@p.example", "uid-1", "CANCEL", 4, T0)
    # And untagged events are not calsync's
    assert google_copy("a@g.example", {**g, "extendedProperties": {}}) is None


def test_former_participants_are_judged_too():
    # Given dan was once in s-1 and was removed; his copy is gone
    t = truth(ever=frozenset({("s-1", "dan")}), addresses={**truth().addresses, "dan": frozenset({"dan@p.example"})})
    # When judged
    clean = check(t, good_seen())
    # Then he counts as correctly absent
    assert clean.ok and clean.absent_ok == 2
    # But if his last message is still the REQUEST, the copy was not withdrawn
    late = check(t, Seen(good_seen().events, [*good_seen().invites, inv(to="dan@p.example", arrival=9)]))
    assert late.stale == 1 and late.problems[0].expected == "nothing (not a participant)"


def test_identical_resends_are_counted_but_not_duplicates():
    # Given cid received the same REQUEST:0 twice (a crash between the send and its commit)
    seen = Seen(good_seen().events, [inv(arrival=0), *good_seen().invites])
    # Then the calendar still shows one copy, and the repeat is reported as a resend
    assert check(truth(), seen).ok
    assert identical_resends(seen.invites) == ["cid@p.example uid-1 REQUEST:0"]
