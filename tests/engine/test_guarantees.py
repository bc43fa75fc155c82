"""The promises — one copy per person, every change delivered, no silent failure — under the
ways a review broke them: duplicated messages, two threads, remove-and-re-add, address changes,
failed sends followed by new intent, lost messages. Email cases read what a calendar app shows."""

from __future__ import annotations

import threading
import time
from collections import Counter

import dramatiq
import pytest

from sync import api
from sync.email_fallback import EmailChannel
from sync.engine.reconcile import reconcile
from sync.engine.runtime import Runtime, set_runtime
from sync.engine.sweep import sweep
from sync.errors import PermanentError, Throttled, TransientError
from sync.store.db import Store
from sync.store.models import Placement
from sync.testing.channel import MemoryChannel
from tests.support.factories import make_retries_due, make_settings, reconcile_due, session_data
from tests.support.mailclient import AppTransport, CalendarApp

MENTOR, MENTEE = "mentor@example.com", "mentee@example.com"


class FlakyTransport(AppTransport):
    """The calendar app behind an SMTP server that can refuse (an outage) or go slow."""

    def __init__(self, app: CalendarApp) -> None:
        super().__init__(app)
        self.refuse: set[str] = set()
        self.delay = 0.0
        self.sent: list[tuple[str, str]] = []

    def send(self, message, *, sender: str, recipient: str) -> None:
        if recipient in self.refuse:
            raise TransientError(f"SMTP 451 {recipient}: try again later")
        time.sleep(self.delay)
        self.sent.append((recipient, str(message["Subject"])))
        super().send(message, sender=sender, recipient=recipient)


@pytest.fixture
def app() -> CalendarApp:
    return CalendarApp()


@pytest.fixture
def transport(app: CalendarApp) -> FlakyTransport:
    return FlakyTransport(app)


@pytest.fixture
def rt(db_url: str, transport: FlakyTransport) -> Runtime:
    return Runtime(make_settings(db_url), Store(db_url),
                   channels=lambda s, st: {"email": EmailChannel(st, transport, s.mail_from)})


def push(rt: Runtime, **overrides) -> None:
    result = api.upsert_session(session_data(**overrides), rt=rt, enqueue=False)
    assert result.ok, result


def mentee(email: str = MENTEE, **extra) -> dict:
    return {"user_id": "u-2", "email": email, "name": "Alan Turing", "role": "mentee", **extra}


MENTOR_P = {"user_id": "u-1", "email": MENTOR, "name": "Ada Lovelace", "role": "mentor"}


def placement_states(rt: Runtime) -> dict[tuple[str, str, str], str]:
    return {(p.user_id, p.channel, p.recipient_email): p.state
            for p in api.get_session("sess-42", rt=rt).placements}


# -- 1. two threads of one worker process ------------------------------------------------------


def test_two_threads_of_one_process_send_each_invite_once(rt: Runtime, app: CalendarApp,
                                                          transport: FlakyTransport):
    # Given one worker process (one Runtime) whose SMTP server is slow
    push(rt)
    transport.delay = 0.3
    # When two of its threads take the same session at once (a duplicated message)
    threads = [threading.Thread(target=reconcile, args=(rt, "sess-42")) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    reconcile_due(rt, "sess-42")
    # Then each person got exactly one invite, and SEQUENCE never went down
    assert Counter(r for r, _ in transport.sent) == {MENTOR: 1, MENTEE: 1}
    assert app.sequence_went_down == []
    # And a later title edit reaches them as an update their calendar applies
    push(rt, version=2, title="Goals, revised")
    reconcile(rt, "sess-42")
    assert [e.summary for e in app.showing(MENTEE)] == ["Goals, revised"]


def test_the_worker_threads_of_dramatiq_take_a_duplicated_message_once(db_url: str, app: CalendarApp,
                                                                       transport: FlakyTransport):
    # Given the real actor on a worker with four threads, and a slow SMTP server
    from sync.engine.broker import QUEUE
    from sync.engine.tasks import broker, sync_session

    rt = Runtime(make_settings(db_url), Store(db_url),
                 channels=lambda s, st: {"email": EmailChannel(st, transport, s.mail_from)})
    set_runtime(rt)
    push(rt)
    transport.delay = 0.2
    worker = dramatiq.Worker(broker, worker_timeout=50, worker_threads=4)
    worker.start()
    try:
        # When the same session is enqueued three times (an upsert, a sweep, a resync)
        for _ in range(3):
            sync_session.send("sess-42")
        broker.join(QUEUE, fail_fast=True, timeout=30_000)
    finally:
        worker.stop()
        broker.flush_all()
        set_runtime(None)
    # Then each person was mailed once
    assert Counter(r for r, _ in transport.sent) == {MENTOR: 1, MENTEE: 1}


# -- 3. address change -------------------------------------------------------------------------


def test_a_changed_address_cancels_the_old_invite_and_invites_the_new_one(rt: Runtime, app: CalendarApp):
    # Given the mentee holds an invite at their old address
    push(rt)
    reconcile(rt, "sess-42")
    # When the platform corrects their address
    push(rt, version=2, participants=[MENTOR_P, mentee("alan@new.example")])
    reconcile(rt, "sess-42")
    # Then the old address no longer shows the session, the new one does, the mentor is untouched
    assert app.showing(MENTEE) == []
    assert len(app.showing("alan@new.example")) == 1
    assert len(app.showing(MENTOR)) == 1
    # And both copies are settled in the store, the old one withdrawn
    assert placement_states(rt)[("u-2", "email", MENTEE)] == "withdrawn"
    assert placement_states(rt)[("u-2", "email", "alan@new.example")] == "placed"


def test_a_new_address_that_reaches_the_same_calendar_sorts_after_the_cancel(rt: Runtime, app: CalendarApp):
    # Given the mentee's new address is an alias of the same mailbox
    push(rt)
    reconcile(rt, "sess-42")
    push(rt, version=2, participants=[MENTOR_P, mentee("Alan.Turing@example.com")])
    reconcile(rt, "sess-42")
    # Then the invite to the new address carries a SEQUENCE above the old address's CANCEL
    cancel = next(s for a, m, s in app.received if a == MENTEE and m == "CANCEL")
    invite = next(s for a, m, s in app.received if a == "alan.turing@example.com" and m == "REQUEST")
    assert invite > cancel


# -- 5. a failure never swallows later intent -------------------------------------------------


def test_cancellation_after_an_smtp_outage_still_reaches_the_recipient(rt: Runtime, app: CalendarApp,
                                                                      transport: FlakyTransport):
    # Given the mentee has the invite, then an SMTP outage outlasts every retry of a reschedule
    push(rt)
    reconcile(rt, "sess-42")
    transport.refuse.add(MENTEE)
    push(rt, version=2, start="2026-12-01T17:00:00-05:00", end="2026-12-01T18:00:00-05:00")
    for _ in range(3):
        reconcile_due(rt, "sess-42")
    assert placement_states(rt)[("u-2", "email", MENTEE)] == "failed"
    # When the mail server is back and the session is cancelled
    transport.refuse.clear()
    push(rt, version=3, status="cancelled", start="2026-12-01T17:00:00-05:00", end="2026-12-01T18:00:00-05:00")
    reconcile(rt, "sess-42")
    # Then the cancellation reaches the mentee: their calendar no longer shows it
    assert app.showing(MENTEE) == [] and app.showing(MENTOR) == []


def test_a_failed_copy_is_retried_on_a_long_backoff_and_the_sweeper_finds_it(rt: Runtime, app: CalendarApp,
                                                                              transport: FlakyTransport):
    # Given every attempt to mail the mentee failed
    transport.refuse.add(MENTEE)
    push(rt, start="2099-12-01T15:00:00-05:00", end="2099-12-01T16:00:00-05:00")
    for _ in range(3):
        reconcile_due(rt, "sess-42")
    [failed] = [p for p in api.get_session("sess-42", rt=rt).placements if p.state == "failed"]
    # Then it stays visible with its reason and a retry about an hour out, not never
    assert "SMTP 451" in failed.last_error and failed.next_attempt_at is not None
    assert 3000 < (failed.next_attempt_at - failed.updated_at).total_seconds() < 3700
    # When the server is back and that hour has passed (no message carries it: the sweeper does)
    transport.refuse.clear()
    make_retries_due(rt, "sess-42")
    queued: list[str] = []
    sweep(rt, queued.append)
    assert queued == ["sess-42"]
    reconcile(rt, "sess-42")
    # Then the mentee has the invite
    assert len(app.showing(MENTEE)) == 1


def test_a_corrected_address_gets_the_invite_a_failed_one_never_did(rt: Runtime, app: CalendarApp,
                                                                    transport: FlakyTransport):
    # Given the mentee's address bounced on every attempt
    transport.refuse.add("alan@typo.example")
    push(rt, participants=[MENTOR_P, mentee("alan@typo.example")])
    for _ in range(3):
        reconcile_due(rt, "sess-42")
    # When the platform corrects it
    push(rt, version=2, participants=[MENTOR_P, mentee(MENTEE)])
    reconcile(rt, "sess-42")
    # Then the corrected address shows the session, once
    assert len(app.showing(MENTEE)) == 1


# -- 7. a bug inside one channel call ----------------------------------------------------------


def test_an_unexpected_exception_fails_only_that_placement(runtime: Runtime, channel: MemoryChannel):
    # Given the channel raises something that is not a channel error for the mentor only
    def explode(op, target):
        if target.user_id == "u-1":
            raise ValueError("the organizer of an invite cannot be its recipient")

    channel.before = explode
    api.upsert_session(session_data(), rt=runtime, enqueue=False)
    reconcile(runtime, "sess-42")
    # Then the mentor's placement failed with the reason, and the mentee was still placed
    view = {p.user_id: p for p in api.get_session("sess-42", rt=runtime).placements}
    assert view["u-1"].state == "failed" and "ValueError" in view["u-1"].last_error
    assert view["u-2"].state == "placed"


# -- 8. throttles spend no crash budget --------------------------------------------------------


def test_ten_throttles_and_a_crash_do_not_dead_letter_the_session(db_url: str, channel: MemoryChannel,
                                                                  monkeypatch):
    # Given a provider that throttles ten times, then a worker crash, then calm
    from sync.engine.broker import QUEUE
    from sync.engine.tasks import broker, sync_session
    from sync.store import placements

    rt = Runtime(make_settings(db_url, retry_min_backoff_ms=1, retry_max_backoff_ms=5), Store(db_url),
                 channels=lambda s, st: {"email": channel})
    set_runtime(rt)
    channel.fail_with = [Throttled("429 slow down", retry_after=0.001) for _ in range(10)]
    real = placements.record_success
    crashes = iter([True])

    def crash_once(*args, **kwargs):
        if next(crashes, False):
            raise RuntimeError("worker crashed after the call")
        return real(*args, **kwargs)

    monkeypatch.setattr(placements, "record_success", crash_once)
    monkeypatch.setattr("sync.engine.tasks.MAX_CRASH_RETRIES", 1)
    api.upsert_session(session_data(participants=[MENTOR_P]), rt=rt, enqueue=False)
    worker = dramatiq.Worker(broker, worker_timeout=20, worker_threads=1)
    worker.start()
    try:
        sync_session.send("sess-42")
        broker.join(QUEUE, fail_fast=False, timeout=30_000)
        worker.join()
    finally:
        worker.stop()
        dead = list(broker.dead_letters)
        broker.flush_all()
        set_runtime(None)
    # Then nothing was dead-lettered and the invite went out
    assert dead == []
    assert ("place", "u-1", 0) in channel.ops()


# -- 9. the outbox de-duplicates an attempt, not a content -------------------------------------


def test_an_edit_reverted_is_mailed_and_same_second_updates_stamp_in_order(rt: Runtime, app: CalendarApp,
                                                                           transport: FlakyTransport):
    # Given an agenda A, then B, then A again, each reconciled within the same second
    push(rt, agenda_html="<p>A</p>")
    reconcile(rt, "sess-42")
    push(rt, version=2, agenda_html="<p>B</p>")
    reconcile(rt, "sess-42")
    push(rt, version=3, agenda_html="<p>A</p>", title="Back to A")
    reconcile(rt, "sess-42")
    # Then all three went out to each person, and their calendar shows the last one
    assert Counter(r for r, _ in transport.sent) == {MENTOR: 3, MENTEE: 3}
    assert [e.summary for e in app.showing(MENTEE)] == ["Back to A"]
    # And with one SEQUENCE, the DTSTAMPs strictly rise, so a receiver can order them
    from sqlalchemy import select

    from sync.store.models import OutboxRow

    with rt.store.tx() as db:
        stamps = list(db.scalars(select(OutboxRow.dtstamp).join(Placement).where(Placement.user_id == "u-2")
                                 .order_by(OutboxRow.id)))
    assert stamps == sorted(stamps) and len(set(stamps)) == 3


# -- 14. intent lives in the store, not in messages --------------------------------------------


def test_a_failed_send_then_a_lost_message_is_found_by_the_sweeper(runtime: Runtime, channel: MemoryChannel):
    # Given a session whose only message is lost after a permanent failure
    channel.fail_with = [PermanentError("550 mailbox unavailable")]
    api.upsert_session(session_data(participants=[MENTOR_P]), rt=runtime, enqueue=False)
    reconcile(runtime, "sess-42")
    # When the session changes and that message is lost too (stored, never enqueued)
    api.upsert_session(session_data(version=2, title="New title", participants=[MENTOR_P]), rt=runtime,
                       enqueue=False)
    queued: list[str] = []
    sweep(runtime, queued.append)
    # Then the sweeper enqueues it, and the change reaches the mentor
    assert queued == ["sess-42"]
    reconcile(runtime, "sess-42")
    assert channel.copies["u-1"].title == "New title"


def test_a_placement_abandoned_by_a_killed_worker_is_swept(runtime: Runtime, channel: MemoryChannel):
    # Given a worker killed mid-send left the mentor's placement in "sending" in a settled session
    api.upsert_session(session_data(participants=[MENTOR_P]), rt=runtime, enqueue=False)
    reconcile(runtime, "sess-42")
    from datetime import timedelta

    from sqlalchemy import update

    from sync.store.db import utcnow

    with runtime.store.tx() as db:
        db.execute(update(Placement).values(state="sending", lease_owner="dead-run",
                                            lease_until=utcnow() - timedelta(seconds=1)))
    # When the sweeper runs
    queued: list[str] = []
    sweep(runtime, queued.append)
    # Then it enqueues the session, and the next run settles the placement
    assert queued == ["sess-42"]
    reconcile(runtime, "sess-42")
    assert {p.state for p in api.get_session("sess-42", rt=runtime).placements} == {"placed"}


# -- 15. status shows every placement that is not settled --------------------------------------


def test_status_names_stuck_held_stranded_and_disconnecting_placements(runtime: Runtime, channel: MemoryChannel):
    from datetime import timedelta

    from sqlalchemy import update

    from sync.ops.status import find_problems
    from sync.store.db import utcnow
    from sync.store.models import Integration, Person
    from sync.store.stats import store_stats

    # Given a settled session whose mentor's claim was left "sending" by a killed worker,
    # a mentee held by a rejected OAuth client, a stranded copy, and an integration still disconnecting
    api.upsert_session(session_data(), rt=runtime, enqueue=False)
    api.upsert_session(session_data(id="sess-43"), rt=runtime, enqueue=False)
    reconcile(runtime, "sess-42")
    reconcile(runtime, "sess-43")
    with runtime.store.tx() as db:
        db.execute(update(Placement).where(Placement.session_id == "sess-42", Placement.user_id == "u-1")
                   .values(state="sending", lease_until=utcnow() - timedelta(minutes=1)))
        db.execute(update(Placement).where(Placement.session_id == "sess-42", Placement.user_id == "u-2")
                   .values(state="held", last_error="Google refused calsync's OAuth client (invalid_client)"))
        db.execute(update(Placement).where(Placement.session_id == "sess-43", Placement.user_id == "u-2")
                   .values(state="stranded", last_error="invalid_grant"))
        if db.get(Person, "u-1") is None:
            db.add(Person(user_id="u-1", email=MENTOR))
        db.add(Integration(user_id="u-1", provider="google", credentials=b"x", status="disconnecting"))
    # When status gathers the store
    with runtime.store.tx() as db:
        stats = store_stats(db)
    problems = find_problems(None, stats)
    # Then each is listed with its reason, and each is a problem an operator sees
    assert {(u.session_id, u.user_id, u.state, u.attention) for u in stats.unsettled} == {
        ("sess-42", "u-1", "sending", True), ("sess-42", "u-2", "held", True), ("sess-43", "u-2", "stranded", True)}
    text = "\n".join(problems)
    assert "invalid_client" in text and "stranded" in text and "stuck in sending" in text
    assert "google of u-1 is disconnecting" in text


def test_disconnecting_someone_with_two_integrations_on_their_way_out_reports_both(runtime: Runtime):
    from sync import accounts
    from sync.store.models import Integration, Person

    # Given a person who switched from Google to Outlook (Google still disconnecting) and is now disconnected
    with runtime.store.tx() as db:
        db.add(Person(user_id="u-1", email=MENTOR))
        db.flush()
        db.add(Integration(user_id="u-1", provider="google", credentials=b"x", status="disconnecting"))
        db.add(Integration(user_id="u-1", provider="outlook", credentials=b"y", status="active"))
    # When support disconnects them
    result = accounts.disconnect(runtime, "u-1", reconcile_now=lambda sid: None)
    # Then both finish (no copies were left), in one answer
    assert (result.status, result.remaining) == ("disconnected", 0)
    assert {r.status for r in accounts.list_integrations(runtime)} == {"disconnected"}


def test_using_the_python_api_leaves_the_host_applications_dramatiq_alone(tmp_path):
    # Given a host application with its own Dramatiq broker, in a fresh interpreter
    import subprocess
    import sys

    from sync.store.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'host.db'}"
    upgrade(url)
    script = """
import dramatiq
from dramatiq.brokers.stub import StubBroker
mine = StubBroker()
dramatiq.set_broker(mine)
from sync import api
import sys
sys.path.insert(0, ROOT)  # for tests.support only: the repository root also holds the deploy script worker.py
from tests.support.factories import session_data
sys.path.remove(ROOT)
result = api.upsert_session(session_data())
assert result.queued, result
assert dramatiq.get_broker() is mine, "calsync replaced the host's broker"
import importlib.util
assert importlib.util.find_spec("worker") is None, "a top-level 'worker' module is importable"
print("ok")
"""
    script = script.replace("ROOT", repr(str(__import__("pathlib").Path(__file__).resolve().parents[2])))
    env = {"PATH": "/usr/bin:/bin", "CALSYNC_DATABASE_URL": url, "CALSYNC_BROKER_URL": "memory://"}
    # When it stores a session through calsync's API (which enqueues on calsync's own broker)
    done = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)
    # Then its global broker is still its own, and no top-level `worker` module came with calsync
    assert done.stdout.strip() == "ok", done.stderr


def test_json_log_lines_carry_session_user_channel_and_action(runtime: Runtime, channel: MemoryChannel):
    import io
    import json
    import logging

    from sync.engine.jsonlog import JsonFormatter

    # Given JSON logging, and a channel that crashes for the mentor
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("sync")
    logger.addHandler(handler)

    def explode(op, target):
        if target.user_id == "u-1":
            raise ValueError("boom")

    channel.before = explode
    api.upsert_session(session_data(), rt=runtime, enqueue=False)
    try:
        # When the session is reconciled
        reconcile(runtime, "sess-42")
    finally:
        logger.removeHandler(handler)
    # Then the error line says which session, person, channel and action, as fields
    [line] = [json.loads(raw) for raw in out.getvalue().splitlines() if "boom" in raw]
    assert {k: line[k] for k in ("session_id", "user_id", "channel", "action")} == {
        "session_id": "sess-42", "user_id": "u-1", "channel": "email", "action": "create"}


# -- issue: sessions that ended long ago ------------------------------------------------------


def test_a_session_that_has_ended_gets_no_new_invite_but_withdrawals_still_go_out(db_url: str,
                                                                                channel: MemoryChannel):
    # Given the default policy, and a session that ended last month, booked only now
    rt = Runtime(make_settings(db_url, past_sessions="skip"), Store(db_url), channels=lambda s, st: {"email": channel})
    past = {"start": "2020-11-01T15:00:00+00:00", "end": "2020-11-01T16:00:00+00:00"}
    api.upsert_session(session_data(**past), rt=rt, enqueue=False)
    report = reconcile(rt, "sess-42")
    # Then nobody is mailed, and the session counts as settled
    assert channel.ops() == [] and report.retry_in_ms is None
    assert api.get_session("sess-42", rt=rt).synced_revision == api.get_session("sess-42", rt=rt).revision
    # When a session someone already holds ends and is then cancelled
    ongoing = Runtime(make_settings(db_url, past_sessions="send"), Store(db_url),
                      channels=lambda s, st: {"email": channel})
    api.upsert_session(session_data(id="held", **past), rt=ongoing, enqueue=False)
    reconcile(ongoing, "held")
    channel.calls.clear()
    api.cancel_session("held", rt=rt, enqueue=False)
    reconcile(rt, "held")
    # Then the withdrawal still goes out to each holder
    assert sorted(channel.ops()) == [("withdraw", "u-1", 1), ("withdraw", "u-2", 1)]
