"""The planner alone: recorded state in, actions out, no I/O."""

from __future__ import annotations

from dataclasses import replace

from sync.core.plan import Desired, Kind, Recorded, plan
from sync.core.render import Recipient, render
from sync.core.session import Participant, parse_session
from tests.support.factories import session_data

SESSION = parse_session(session_data())


def desired(session=SESSION, channel: str = "email") -> list[Desired]:
    return [Desired(p.user_id, channel, render(session, p)) for p in session.participants]


def render_for(r: Recipient):
    return render(SESSION, Participant(user_id=r.user_id, email=r.email, name=r.name, timezone=r.timezone))


def placed(d: Desired, pid: int, *, sequence: int = 0, channel: str | None = None, state: str = "placed") -> Recorded:
    ev = d.event
    return Recorded(pid, d.user_id, channel or d.channel, ev.recipient, live=True, state=state, sequence=sequence,
                    content_hash=ev.content_hash, material_hash=ev.material_hash, external_id=None)


def kinds(actions) -> list[tuple[str, str, str, int]]:
    return [(a.kind.value, a.user_id, a.channel, a.sequence) for a in actions]


def test_new_session_creates_one_placement_per_participant_at_sequence_zero():
    assert kinds(plan(desired(), [], render_for)) == [
        ("create", "u-1", "email", 0), ("create", "u-2", "email", 0)]


def test_unchanged_session_costs_nothing():
    # Given everything was placed as it is now
    d = desired()
    recs = [placed(x, i) for i, x in enumerate(d)]
    # Then the plan is all NOTHING
    assert {a.kind for a in plan(d, recs, render_for)} == {Kind.NOTHING}


def test_reschedule_raises_sequence_but_agenda_edit_keeps_it():
    recs = [placed(x, i, sequence=2) for i, x in enumerate(desired())]
    moved = parse_session(session_data(start="2026-12-02T15:00:00-05:00", end="2026-12-02T16:00:00-05:00", version=2))
    assert kinds(plan(desired(moved), recs, render_for)) == [
        ("update", "u-1", "email", 3), ("update", "u-2", "email", 3)]
    edited = parse_session(session_data(agenda_html="<p>New agenda</p>", version=2))
    assert kinds(plan(desired(edited), recs, render_for)) == [
        ("update", "u-1", "email", 2), ("update", "u-2", "email", 2)]


def test_removed_participant_is_withdrawn_alone_with_a_higher_sequence():
    recs = [placed(x, i, sequence=1) for i, x in enumerate(desired())]
    data = session_data(version=2)
    data["participants"] = data["participants"][:1]
    actions = plan(desired(parse_session(data)), recs, render_for)
    assert kinds(actions) == [("nothing", "u-1", "email", 1), ("withdraw", "u-2", "email", 2)]
    assert actions[1].event.recipient.email == "mentee@example.com"


def test_cancelled_session_withdraws_every_live_copy():
    recs = [placed(x, i) for i, x in enumerate(desired())]
    recs[1] = replace(recs[1], live=False, state="withdrawn")
    assert kinds(plan([], recs, render_for, cancelled=True)) == [("withdraw", "u-1", "email", 1)]


def test_channel_switch_withdraws_the_old_copy_before_placing_the_new():
    d_email = desired()
    recs = [placed(d_email[0], 1, sequence=4)]
    d_google = [Desired("u-1", "google", d_email[0].event)]
    assert kinds(plan(d_google, recs, render_for)) == [
        ("withdraw", "u-1", "email", 5), ("create", "u-1", "google", 0)]


def test_reinvite_after_withdrawal_continues_the_sequence():
    d = desired()[:1]
    rec = replace(placed(d[0], 1, sequence=3), live=False, state="withdrawn")
    assert kinds(plan(d, [rec], render_for)) == [("create", "u-1", "email", 4)]


def test_failed_placement_waits_for_an_explicit_retry():
    d = desired()[:1]
    # Given the first invite was attempted (so it may have gone out) and then failed for good
    rec = Recorded(1, "u-1", "email", d[0].event.recipient, live=True, state="failed", sequence=0,
                   content_hash=None, material_hash=None, external_id=None, last_error="SMTP 550")
    assert kinds(plan(d, [rec], render_for)) == [("nothing", "u-1", "email", 0)]
    # Then a retry goes out with a higher SEQUENCE, never reusing one that may have been seen
    assert kinds(plan(d, [rec], render_for, retry_failed=True)) == [("update", "u-1", "email", 1)]


def test_a_copy_in_doubt_is_withdrawn_when_the_person_leaves():
    # Given a send whose outcome is unknown (the worker died mid-send)
    d = desired()
    rec = Recorded(1, "u-2", "email", d[1].event.recipient, live=True, state="sending", sequence=0,
                   content_hash=None, material_hash=None, external_id=None)
    # When u-2 is no longer a participant, they get a CANCEL anyway
    assert kinds(plan(d[:1], [rec], render_for)) == [("create", "u-1", "email", 0), ("withdraw", "u-2", "email", 1)]
