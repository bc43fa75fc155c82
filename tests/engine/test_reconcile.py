"""The engine end to end against a real store and a recording channel."""

from __future__ import annotations

import threading

from sync import api
from sync.engine.reconcile import reconcile
from sync.engine.runtime import Runtime
from sync.errors import PermanentError, TransientError
from sync.store import sessions
from sync.testing.channel import MemoryChannel
from tests.support.factories import reconcile_due, session_data


def upsert(rt: Runtime, **overrides) -> None:
    result = api.upsert_session(session_data(**overrides), rt=rt, enqueue=False)
    assert result.ok, result


def states(rt: Runtime) -> dict[tuple[str, str], tuple[str, bool, int]]:
    view = api.get_session("sess-42", rt=rt)
    return {(p.user_id, p.channel): (p.state, p.live, p.sequence) for p in view.placements}


def test_create_reschedule_cancel_sends_one_copy_each_time(runtime: Runtime, channel: MemoryChannel):
    # Given a new session
    upsert(runtime)
    # When it is reconciled, rescheduled, reconciled again and cancelled
    reconcile(runtime, "sess-42")
    upsert(runtime, version=2, start="2026-12-01T16:00:00-05:00", end="2026-12-01T17:00:00-05:00")
    reconcile(runtime, "sess-42")
    api.cancel_session("sess-42", rt=runtime, enqueue=False)
    reconcile(runtime, "sess-42")
    # Then each person saw place(0), place(1), withdraw(2) and holds nothing now
    assert channel.ops() == [
        ("place", "u-1", 0), ("place", "u-2", 0),
        ("place", "u-1", 1), ("place", "u-2", 1),
        ("withdraw", "u-1", 2), ("withdraw", "u-2", 2),
    ]
    assert channel.copies == {}
    assert states(runtime) == {("u-1", "email"): ("withdrawn", False, 2), ("u-2", "email"): ("withdrawn", False, 2)}


def test_unchanged_resync_sends_nothing_and_marks_synced(runtime: Runtime, channel: MemoryChannel):
    upsert(runtime)
    reconcile(runtime, "sess-42")
    before = len(channel.calls)
    # When the same session is reconciled again (a duplicate message or a resync)
    report = reconcile(runtime, "sess-42")
    # Then nothing is sent and the session counts as settled
    assert len(channel.calls) == before
    assert report.counts["nothing"] == 2
    with runtime.store.tx() as db:
        row = sessions.row(db, "sess-42")
        assert row is not None and row.synced_revision == row.revision


def test_removed_participant_alone_gets_withdrawn(runtime: Runtime, channel: MemoryChannel):
    upsert(runtime)
    reconcile(runtime, "sess-42")
    data = session_data(version=2)
    data["participants"] = data["participants"][:1]
    api.upsert_session(data, rt=runtime, enqueue=False)
    reconcile(runtime, "sess-42")
    assert channel.ops()[2:] == [("withdraw", "u-2", 1)]
    assert channel.calls[-1][3].recipient.email == "mentee@example.com"


def test_agenda_only_edit_sends_an_update_with_the_same_sequence(runtime: Runtime, channel: MemoryChannel):
    upsert(runtime)
    reconcile(runtime, "sess-42")
    upsert(runtime, version=2, agenda_html="<p>Bring your goals</p>")
    reconcile(runtime, "sess-42")
    assert channel.ops()[2:] == [("place", "u-1", 0), ("place", "u-2", 0)]
    assert "Bring your goals" in channel.calls[-1][3].agenda_text


def test_transient_failures_retry_then_fail_with_the_reason(runtime: Runtime, channel: MemoryChannel):
    # Given the channel refuses every attempt for u-1 (max_attempts=3 in these settings)
    upsert(runtime)
    refusals = iter(range(3))

    def refuse_u1(op, target):
        if target.user_id == "u-1" and next(refusals, None) is not None:
            raise TransientError("SMTP 451 try later")

    channel.before = refuse_u1
    reports = [reconcile_due(runtime, "sess-42") for _ in range(3)]
    # Then the first two runs ask to retry, the third gives up with the reason recorded
    assert reports[0].retry_in_ms is not None and reports[1].retry_in_ms is not None
    assert reports[2].retry_in_ms is None
    view = api.get_session("sess-42", rt=runtime)
    failed = [p for p in view.placements if p.state == "failed"]
    assert [(p.user_id, p.attempts, p.last_error) for p in failed] == [("u-1", 3, "SMTP 451 try later")]
    # And the other participant was placed on the first run
    assert ("place", "u-2", 0) in channel.ops()
    # When support resyncs with retry_failed, it is tried again and succeeds
    # (each attempt may have reached someone, so each used a fresh SEQUENCE)
    reconcile(runtime, "sess-42", retry_failed=True)
    assert states(runtime)[("u-1", "email")] == ("placed", True, 3)


def test_permanent_failure_is_not_retried(runtime: Runtime, channel: MemoryChannel):
    upsert(runtime)
    channel.fail_with = [PermanentError("400 bad request: description too long")]
    report = reconcile(runtime, "sess-42")
    assert report.retry_in_ms is None
    assert states(runtime)[("u-1", "email")][0] == "failed"
    reconcile(runtime, "sess-42")
    assert [c for c in channel.ops() if c[1] == "u-1"] == []


def test_stale_version_is_reported_and_not_applied(runtime: Runtime):
    upsert(runtime, version=5, title="Five")
    result = api.upsert_session(session_data(version=4, title="Four"), rt=runtime, enqueue=False)
    assert (result.outcome, result.stored_version) == ("stale", 5)
    assert api.get_session("sess-42", rt=runtime).session.title == "Five"


def test_two_workers_racing_on_one_session_send_once(db_url: str):
    # Given two worker processes (distinct lease owners) and a channel that is slow
    from sync.store.db import Store
    from tests.support.factories import make_settings

    channel = MemoryChannel()
    gate = threading.Barrier(2, timeout=10)
    first = threading.Event()

    def slow(op, target):
        if not first.is_set():
            first.set()
            gate.wait()  # hold the lease until the other worker has planned and tried to claim

    channel.before = slow
    settings = make_settings(db_url)
    rt1 = Runtime(settings, Store(db_url), channels=lambda s, st: {"email": channel})
    rt2 = Runtime(settings, Store(db_url), channels=lambda s, st: {"email": channel})
    upsert(rt1)

    results = {}

    def run(name, rt):
        results[name] = reconcile(rt, "sess-42")

    t1 = threading.Thread(target=run, args=("a", rt1))
    t1.start()
    first.wait(10)
    t2 = threading.Thread(target=run, args=("b", rt2))
    t2.start()
    t2.join(20)
    gate.wait()
    t1.join(20)
    # Then each participant got exactly one invite, and the loser was told to come back
    assert sorted(channel.ops()) == [("place", "u-1", 0), ("place", "u-2", 0)]
    assert any(r.busy for r in results.values())


def test_actions_are_counted_for_metrics(runtime: Runtime, channel: MemoryChannel):
    from prometheus_client import REGISTRY

    def sample(outcome: str) -> float:
        labels = {"channel": "email", "action": "create", "outcome": outcome}
        return REGISTRY.get_sample_value("calsync_placement_actions_total", labels) or 0.0

    before_ok, before_retry = sample("ok"), sample("retrying")
    upsert(runtime)
    channel.fail_with = [TransientError("SMTP 451")]
    reconcile(runtime, "sess-42")
    assert (sample("ok") - before_ok, sample("retrying") - before_retry) == (1.0, 1.0)


def test_sweeper_leaves_a_scheduled_retry_alone_until_it_is_due(runtime: Runtime, channel: MemoryChannel):
    from datetime import timedelta

    from sync.engine.sweep import sweep
    from sync.store.db import utcnow
    from sync.store.models import Placement

    # Given a session whose first send failed and whose retry is scheduled a minute out
    runtime.settings.retry_min_backoff_ms, runtime.settings.retry_max_backoff_ms = 60_000, 120_000
    upsert(runtime)
    channel.fail_with = [TransientError("SMTP 451")]
    assert reconcile(runtime, "sess-42").retry_in_ms is not None
    swept: list[str] = []
    # Then the sweeper does not jump the backoff
    assert sweep(runtime, swept.append) == []
    # When the retry is overdue (its message was lost), the sweeper picks the session up
    with runtime.store.tx() as db:
        db.query(Placement).update({"next_attempt_at": utcnow() - timedelta(seconds=1)})
    assert sweep(runtime, swept.append) == ["sess-42"]
