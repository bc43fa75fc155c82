"""Bulk resync: selection, dry runs that change nothing, and repairs that enqueue only what differs."""

from __future__ import annotations

from datetime import datetime, timezone

from sync import api
from sync.engine.reconcile import reconcile
from sync.engine.runtime import Runtime
from sync.ops.resync import Selection, resync
from sync.testing.channel import MemoryChannel
from tests.support.factories import session_data


def book(rt: Runtime, sid: str, program: str = "Spring Cohort", start: str = "2026-12-01T15:00:00-05:00") -> None:
    end = start.replace("15:00", "16:00")
    assert api.upsert_session(session_data(id=sid, program=program, start=start, end=end), rt=rt, enqueue=False).ok


def test_resync_of_settled_sessions_enqueues_nothing(runtime: Runtime, channel: MemoryChannel):
    for sid in ("a", "b"):
        book(runtime, sid)
        reconcile(runtime, sid)
    queued: list[str] = []
    result = resync(runtime, Selection(everything=True), dry_run=False, enqueue=queued.append)
    assert (result.sessions, result.placements, queued) == (2, 4, [])
    assert result.counts == {"nothing": 4}


def test_dry_run_reports_the_plan_and_changes_nothing(runtime: Runtime, channel: MemoryChannel):
    book(runtime, "a")
    queued: list[str] = []
    result = resync(runtime, Selection(session_id="a"), dry_run=True, enqueue=queued.append)
    assert queued == [] and channel.calls == []
    assert result.steps == [("a", "u-1", "email", "create", "new placement"),
                            ("a", "u-2", "email", "create", "new placement")]
    assert result.enqueued == ["a"]


def test_selection_by_program_user_and_since(runtime: Runtime):
    book(runtime, "spring", program="Spring Cohort", start="2026-12-01T15:00:00-05:00")
    book(runtime, "fall", program="Fall Cohort", start="2027-03-01T15:00:00-05:00")

    def ids(sel: Selection) -> list[str]:
        return resync(runtime, sel, dry_run=True, enqueue=lambda s: None).enqueued

    assert ids(Selection(program="Fall Cohort")) == ["fall"]
    assert ids(Selection(user_id="u-2")) == ["spring", "fall"]
    assert ids(Selection(everything=True, since=datetime(2027, 1, 1, tzinfo=timezone.utc))) == ["fall"]
    assert ids(Selection(user_id="nobody")) == []


def test_failed_placements_are_retried_by_resync(runtime: Runtime, channel: MemoryChannel):
    from sync.errors import PermanentError

    book(runtime, "a")
    channel.fail_with = [PermanentError("400 rejected")]
    reconcile(runtime, "a")
    queued: list[str] = []
    result = resync(runtime, Selection(session_id="a"), dry_run=False, enqueue=queued.append)
    assert queued == ["a"] and result.counts["create"] == 1
