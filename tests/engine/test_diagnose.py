"""Diagnosis against the Google emulator: drift is found, explained, and resync repairs it."""

from __future__ import annotations

import pytest

from sync import accounts, api
from sync.engine.reconcile import reconcile
from sync.errors import NotFound
from sync.ops.diagnose import diagnose_session, diagnose_user, repair_drift, scan
from sync.ops.resync import Selection, resync
from sync.testing.channel import MemoryChannel
from sync.testing.emulators.google import GoogleEmulator
from tests.channels.test_google_channel import MENTOR, google_runtime
from tests.support.factories import session_data

FUTURE = {"start": "2030-12-01T15:00:00-05:00", "end": "2030-12-01T16:00:00-05:00"}


@pytest.fixture
def emu():
    with GoogleEmulator() as emulator:
        yield emulator


@pytest.fixture
def setup(sqlite_url, emu):
    email = MemoryChannel("email")
    rt = google_runtime(sqlite_url, emu, email)
    token = emu.add_user(MENTOR)
    accounts.import_integrations(rt, [{"user_id": "u-1", "provider": "google", "refresh_token": token}],
                                     enqueue=lambda sid: None)
    assert api.upsert_session(session_data(**FUTURE), rt=rt, enqueue=False).ok
    reconcile(rt, "sess-42")
    return rt, token


def kinds(rt) -> dict[str, list[str]]:
    return {c.user_id: [d.kind for d in c.differences] for c in diagnose_session(rt, "sess-42")}


def test_in_sync_session_shows_no_differences(setup, emu):
    rt, _ = setup
    assert kinds(rt) == {"u-1": [], "u-2": []}


def test_moved_and_deleted_events_are_reported_and_resync_repairs_them(setup, emu):
    rt, _ = setup
    [event] = emu.events(MENTOR)
    # Given the mentor dragged the event to another day and renamed it
    emu.modify_event(MENTOR, event["id"], {"summary": "Mine now", "start": {"dateTime": "2030-12-02T10:00:00Z"},
                                          "end": {"dateTime": "2030-12-02T11:00:00Z"}})
    assert kinds(rt)["u-1"] == ["moved", "retitled"]
    # When support repairs and resyncs the session (the session is authoritative)
    repair_drift(rt, "sess-42")
    resync(rt, Selection(session_id="sess-42"), dry_run=False, enqueue=lambda sid: reconcile(rt, sid))
    # Then the event is back as the session says
    assert kinds(rt)["u-1"] == []
    [event] = emu.events(MENTOR)
    assert event["summary"] == "Session 2: Setting goals"
    # Given they then deleted it, the same repair puts it back
    emu.cancel_event(MENTOR, event["id"])
    assert kinds(rt)["u-1"] == ["deleted"]
    repair_drift(rt, "sess-42")
    resync(rt, Selection(session_id="sess-42"), dry_run=False, enqueue=lambda sid: reconcile(rt, sid))
    assert kinds(rt)["u-1"] == [] and len(emu.events(MENTOR)) == 1


def test_duplicate_copies_are_reported_and_the_extra_one_removed(setup, emu):
    rt, _ = setup
    [event] = emu.events(MENTOR)
    dup = {k: v for k, v in event.items() if k in ("summary", "start", "end", "location", "extendedProperties")}
    emu.put_event(MENTOR, {**dup, "id": "dupl1234567"})
    assert kinds(rt)["u-1"] == ["duplicated"]
    repair_drift(rt, "sess-42")
    resync(rt, Selection(session_id="sess-42"), dry_run=False, enqueue=lambda sid: reconcile(rt, sid))
    assert [e["id"] for e in emu.events(MENTOR)] == [event["id"]]


def test_diagnose_user_explains_a_revoked_token(setup, emu):
    rt, token = setup
    assert diagnose_user(rt, "u-1").ok is True
    emu.revoke(token)
    assert api.upsert_session(session_data(version=2, title="Renamed", **FUTURE), rt=rt, enqueue=False).ok
    reconcile(rt, "sess-42")
    report = diagnose_user(rt, "u-1")
    assert report.ok is False and report.channel == "email"
    assert "ask them to reconnect; meanwhile invites go by email" in report.verdict


def test_scan_lists_upcoming_calendar_placements(setup, emu):
    rt, _ = setup
    found = scan(rt, days=365 * 10)
    assert [(sid, c.user_id, c.differences) for sid, c in found] == [("sess-42", "u-1", [])]


def test_unknown_ids_are_not_found(setup):
    rt, _ = setup
    with pytest.raises(NotFound):
        diagnose_session(rt, "nope")
    with pytest.raises(NotFound):
        diagnose_user(rt, "nobody")
