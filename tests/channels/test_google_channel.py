"""The Google channel through the real client library against the local Calendar emulator."""

from __future__ import annotations

from pathlib import Path

import pytest

from sync import accounts, api
from sync.engine.reconcile import reconcile
from sync.engine.runtime import Runtime
from sync.providers.google import GoogleChannel
from sync.quota import MemoryQuota
from sync.store.crypto import CredentialBox, new_key
from sync.store.db import Store
from sync.testing.channel import MemoryChannel
from sync.testing.emulators.google import GoogleEmulator
from tests.support.factories import make_settings, reconcile_due, session_data

MENTOR = "mentor@example.com"


def google_runtime(db_url: str, emu: GoogleEmulator, email: MemoryChannel, **overrides) -> Runtime:
    settings = make_settings(db_url, **{
        "google_client_id": "calsync-test", "google_client_secret": "s3cret", "google_api_url": emu.url,
        "google_token_url": emu.token_url, "google_auth_url": emu.auth_url, "google_revoke_url": emu.revoke_url,
        "google_userinfo_url": emu.userinfo_url, "secret_keys": new_key(), "io_timeout_seconds": 2.0, **overrides})
    return Runtime(settings, Store(db_url), channels=lambda s, st: {
        "email": email,
        "google": GoogleChannel(s, st, CredentialBox([k.get_secret_value() for k in s.secret_keys]), MemoryQuota()),
    })


@pytest.fixture
def email() -> MemoryChannel:
    return MemoryChannel("email")


@pytest.fixture
def rt(sqlite_url: str, emu: GoogleEmulator, email: MemoryChannel) -> Runtime:
    return google_runtime(sqlite_url, emu, email)


def connect_mentor(rt: Runtime, emu: GoogleEmulator) -> str:
    token = emu.add_user(MENTOR)
    [result] = accounts.import_integrations(rt, [{
        "user_id": "u-1", "provider": "google", "account_email": MENTOR, "calendar_id": "primary",
        "refresh_token": token}], enqueue=lambda sid: None)
    assert result.ok, result
    return token


def book(rt: Runtime, **overrides) -> None:
    assert api.upsert_session(session_data(**overrides), rt=rt, enqueue=False).ok


def test_mixed_session_gives_one_event_and_one_invite_and_no_google_email(rt, emu, email):
    # Given the mentor connected Google and the mentee did not
    connect_mentor(rt, emu)
    # When the session is booked and reconciled
    book(rt)
    reconcile_due(rt, "sess-42")
    # Then the mentor has one event, with no attendees, and Google was told to mail nobody
    [event] = emu.events(MENTOR)
    assert event["summary"] == "Session 2: Setting goals"
    assert "attendees" not in event
    assert event["extendedProperties"]["private"]["calsyncSession"] == "sess-42"
    assert "zoom.us/j/123456789" in event["location"]
    assert "View &amp; edit" in event["description"]
    assert emu.count(has_attendees=True) == 0
    assert {r.info.get("send_updates") for r in emu.requests(kind="api") if r.method != "GET"} == {"none"}
    # And only the mentee got an email invite
    assert email.ops() == [("place", "u-2", 0)]


def test_a_retried_insert_reuses_its_event_id_and_turns_the_409_into_an_update(rt, emu, email):
    # Given Google applies the insert but the answer never arrives (the contract checks the outcome;
    # this is how Google gets there: calsync chooses the event id, so the retry collides with itself)
    connect_mentor(rt, emu)
    book(rt)
    emu.lose_next_response(1, method="POST", path_contains="/events")
    first = reconcile_due(rt, "sess-42")
    assert first.retry_in_ms is not None
    # When the worker retries, the same id answers 409 and becomes an update
    reconcile_due(rt, "sess-42")
    assert len(emu.events(MENTOR)) == 1
    assert emu.count(status=409) == 1


def test_id_collision_with_a_foreign_event_moves_to_a_fresh_id(rt, emu, email):
    # Given some other app already holds the id calsync would choose, and Google will not let us take it
    from sync.providers.google_events import event_id

    connect_mentor(rt, emu)
    emu.put_event(MENTOR, {"id": event_id("sess-42", "u-1"), "summary": "Dentist",
                           "start": {"dateTime": "2026-12-05T10:00:00Z"}, "end": {"dateTime": "2026-12-05T11:00:00Z"}})
    emu.cancel_event(MENTOR, event_id("sess-42", "u-1"))
    book(rt)
    reconcile_due(rt, "sess-42")
    summaries = sorted(e["summary"] for e in emu.events(MENTOR))
    assert summaries == ["Session 2: Setting goals"]


def test_connect_flow_with_pkce_stores_the_token_encrypted(rt, emu, email, tmp_path: Path):
    import requests

    emu.add_user(MENTOR)
    url, state = accounts.connect_url(rt, "u-1", "google")
    assert "code_challenge_method=S256" in url and "access_type=offline" in url
    # The person consents; the browser is redirected back with a code
    redirect = requests.get(url, allow_redirects=False, timeout=5).headers["Location"]
    accounts.complete_connect(rt, redirect, enqueue=lambda sid: None)
    [row] = accounts.list_integrations(rt)
    assert (row.status, row.account_email) == ("active", MENTOR)
    with rt.store.engine.connect() as conn:
        from sqlalchemy import text

        blob = conn.execute(text("SELECT credentials FROM integrations")).scalar_one()
    assert b"refresh" not in bytes(blob)


def test_a_lost_reinsert_answer_then_a_cancel_leaves_no_event(rt, emu, email):
    # Given the mentor deleted the event themselves (Google then forgot it entirely)
    connect_mentor(rt, emu)
    book(rt)
    reconcile_due(rt, "sess-42")
    [first] = emu.events(MENTOR)
    emu.cancel_event(MENTOR, first["id"])
    emu.purge_event(MENTOR, first["id"])
    # When the session is rescheduled and the re-insert under a fresh id succeeds but its answer is lost
    book(rt, version=2, start="2026-12-01T17:00:00-05:00", end="2026-12-01T18:00:00-05:00")
    emu.lose_next_response(1, method="POST", path_contains="/events")
    reconcile(rt, "sess-42")
    assert len(emu.events(MENTOR)) == 1
    # And the session is cancelled before any retry
    book(rt, version=3, status="cancelled", start="2026-12-01T17:00:00-05:00", end="2026-12-01T18:00:00-05:00")
    reconcile(rt, "sess-42")
    # Then no event is left on the mentor's calendar
    assert emu.events(MENTOR) == []


