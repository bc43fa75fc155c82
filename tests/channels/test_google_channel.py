"""The Google channel through the real client library against the local Calendar emulator."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from sync import accounts, api
from sync.engine.reconcile import reconcile
from sync.engine.runtime import Runtime
from sync.engine.sweep import sweep
from sync.errors import TransientError
from sync.providers.google import GoogleChannel
from sync.quota import MemoryQuota
from sync.store.crypto import CredentialBox, new_key
from sync.store.db import Store
from sync.store.models import Integration
from sync.testing.emulators.google import GoogleEmulator
from tests.support.factories import RecordingChannel, make_settings, reconcile_due, session_data

MENTOR = "mentor@example.com"


def google_runtime(db_url: str, emu: GoogleEmulator, email: RecordingChannel, **overrides) -> Runtime:
    settings = make_settings(db_url, **{
        "google_client_id": "calsync-test", "google_client_secret": "s3cret", "google_api_url": emu.url,
        "google_token_url": emu.token_url, "google_auth_url": emu.auth_url, "google_revoke_url": emu.revoke_url,
        "google_userinfo_url": emu.userinfo_url, "secret_keys": new_key(), "io_timeout_seconds": 2.0, **overrides})
    return Runtime(settings, Store(db_url), channels=lambda s, st: {
        "email": email,
        "google": GoogleChannel(s, st, CredentialBox([k.get_secret_value() for k in s.secret_keys]), MemoryQuota()),
    })


@pytest.fixture
def email() -> RecordingChannel:
    return RecordingChannel("email")


@pytest.fixture
def rt(sqlite_url: str, emu: GoogleEmulator, email: RecordingChannel) -> Runtime:
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


def assert_mentor_fell_back_to_email(rt: Runtime, email: RecordingChannel, reason: str) -> None:
    """The mentor's integration needs a reconnect, saying why, and they got an emailed invite instead."""
    [row] = accounts.list_integrations(rt)
    assert row.status == "needs_reconnect" and reason in row.reason
    assert ("place", "u-1", 0) in email.ops()


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


def test_lifecycle_leaves_one_event_then_none_and_resync_costs_nothing(rt, emu, email):
    connect_mentor(rt, emu)
    book(rt)
    reconcile_due(rt, "sess-42")
    book(rt, version=2, start="2026-12-01T17:00:00-05:00", end="2026-12-01T18:00:00-05:00")
    reconcile_due(rt, "sess-42")
    book(rt, version=3, start="2026-12-01T17:00:00-05:00", end="2026-12-01T18:00:00-05:00",
         agenda_html="<p>Bring your goals</p>")
    reconcile_due(rt, "sess-42")
    [event] = emu.events(MENTOR)
    assert event["start"]["dateTime"].startswith("2026-12-01T17:00:00-05:00")
    assert "Bring your goals" in event["description"]
    # When nothing changed, a resync makes no API call
    emu.clear_log()
    reconcile_due(rt, "sess-42")
    assert emu.requests(kind="api") == []
    # When cancelled, the event goes
    api.cancel_session("sess-42", rt=rt, enqueue=False)
    reconcile_due(rt, "sess-42")
    assert emu.events(MENTOR) == []


def test_each_change_costs_exactly_one_call(rt, emu, email):
    connect_mentor(rt, emu)
    book(rt)
    reconcile_due(rt, "sess-42")  # includes the token refresh
    emu.clear_log()
    book(rt, version=2, title="Renamed")
    reconcile_due(rt, "sess-42")
    assert [(r.method, r.status) for r in emu.requests(kind="api")] == [("PUT", 200)]


def test_lost_insert_response_does_not_duplicate(rt, emu, email):
    # Given Google applies the insert but the answer never arrives
    connect_mentor(rt, emu)
    book(rt)
    emu.lose_next_response(1, method="POST", path_contains="/events")
    first = reconcile_due(rt, "sess-42")
    assert first.retry_in_ms is not None
    # When the worker retries, the same id answers 409 and becomes an update
    reconcile_due(rt, "sess-42")
    assert len(emu.events(MENTOR)) == 1
    assert emu.count(status=409) == 1


def test_crash_between_provider_call_and_database_write_does_not_duplicate(rt, emu, email, monkeypatch):
    # Given the worker dies right after Google created the event
    connect_mentor(rt, emu)
    book(rt)
    from sync.store import placements

    real = placements.record_success

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("worker killed")

    monkeypatch.setattr(placements, "record_success", crash)
    with pytest.raises(KeyboardInterrupt):
        reconcile_due(rt, "sess-42")
    monkeypatch.setattr(placements, "record_success", real)
    # When the message is redelivered
    reconcile_due(rt, "sess-42")
    # Then there is still one event
    assert len(emu.events(MENTOR)) == 1


@pytest.mark.parametrize(("status", "reason", "retry_after"), [
    (403, "rateLimitExceeded", None), (403, "userRateLimitExceeded", None), (429, "rateLimitExceeded", "7"),
    (500, "backendError", None), (503, "backendError", None)])
def test_rate_limits_and_server_errors_are_retried(rt, emu, email, status, reason, retry_after):
    connect_mentor(rt, emu)
    book(rt)
    emu.fail_next(1, status, reason, retry_after=retry_after, path_contains="/events")
    report = reconcile_due(rt, "sess-42")
    # Then the worker is asked to come back (no sooner than Retry-After when given)
    assert report.retry_in_ms is not None
    if retry_after:
        assert report.retry_in_ms >= 7000
    view = {p.user_id: p for p in api.get_session("sess-42", rt=rt).placements}
    assert view["u-1"].state == "retrying" and str(status) in view["u-1"].last_error
    # And the retry succeeds with one event
    reconcile_due(rt, "sess-42")
    assert len(emu.events(MENTOR)) == 1


def test_update_and_delete_are_retried_too(rt, emu, email):
    connect_mentor(rt, emu)
    book(rt)
    reconcile_due(rt, "sess-42")
    book(rt, version=2, title="Renamed")
    emu.fail_next(1, 429, "rateLimitExceeded", method="PUT")
    assert reconcile_due(rt, "sess-42").retry_in_ms is not None
    reconcile_due(rt, "sess-42")
    assert emu.events(MENTOR)[0]["summary"] == "Renamed"
    api.cancel_session("sess-42", rt=rt, enqueue=False)
    emu.fail_next(1, 403, "userRateLimitExceeded", method="DELETE")
    assert reconcile_due(rt, "sess-42").retry_in_ms is not None
    reconcile_due(rt, "sess-42")
    assert emu.events(MENTOR) == []


def test_timeout_is_retried(rt, emu, email):
    connect_mentor(rt, emu)
    book(rt)
    emu.timeout_next(1, seconds=4, applied=False, path_contains="/events")
    assert reconcile_due(rt, "sess-42").retry_in_ms is not None
    reconcile_due(rt, "sess-42")
    assert len(emu.events(MENTOR)) == 1


def test_bad_request_fails_the_placement_without_retrying(rt, emu, email):
    connect_mentor(rt, emu)
    book(rt)
    emu.fail_next(1, 400, "invalid", path_contains="/events")
    report = reconcile_due(rt, "sess-42")
    assert report.retry_in_ms is None
    view = {p.user_id: p for p in api.get_session("sess-42", rt=rt).placements}
    assert view["u-1"].state == "failed" and "400" in view["u-1"].last_error


def test_delete_of_an_event_already_gone_is_success(rt, emu, email):
    connect_mentor(rt, emu)
    book(rt)
    reconcile_due(rt, "sess-42")
    [event] = emu.events(MENTOR)
    emu.cancel_event(MENTOR, event["id"])  # the person deleted it: a second delete answers 410
    api.cancel_session("sess-42", rt=rt, enqueue=False)
    report = reconcile_due(rt, "sess-42")
    assert report.retry_in_ms is None and not report.errors
    emu.purge_event(MENTOR, event["id"])  # ...or 404 once purged
    view = {p.user_id: p for p in api.get_session("sess-42", rt=rt).placements}
    assert view["u-1"].state == "withdrawn"


def test_event_deleted_by_the_person_is_recreated_under_a_fresh_id(rt, emu, email):
    connect_mentor(rt, emu)
    book(rt)
    reconcile_due(rt, "sess-42")
    [event] = emu.events(MENTOR)
    emu.cancel_event(MENTOR, event["id"])
    # When the session changes, the update hits a deleted event Google will not revive
    book(rt, version=2, title="Renamed")
    reconcile_due(rt, "sess-42")
    [again] = emu.events(MENTOR)
    assert again["id"] != event["id"] and again["summary"] == "Renamed"
    view = {p.user_id: p for p in api.get_session("sess-42", rt=rt).placements}
    assert view["u-1"].external_id == again["id"]


def test_token_death_switches_to_email_in_the_same_reconcile_and_reconnect_switches_back(rt, emu, email):
    token = connect_mentor(rt, emu)
    book(rt)
    reconcile_due(rt, "sess-42")
    assert len(emu.events(MENTOR)) == 1
    # Given the mentor revoked calsync in their Google account
    emu.revoke(token)
    book(rt, version=2, start="2026-12-01T17:00:00-05:00", end="2026-12-01T18:00:00-05:00")
    reconcile_due(rt, "sess-42")
    # Then the integration needs a reconnect and the mentor got an emailed invite right away
    assert_mentor_fell_back_to_email(rt, email, "invalid_grant")
    # When they reconnect with a new token
    fresh = emu.issue_refresh_token(MENTOR)
    accounts.import_integrations(rt, [{"user_id": "u-1", "provider": "google", "refresh_token": fresh}],
                                     enqueue=lambda sid: None)
    reconcile_due(rt, "sess-42")
    # Then the invite is cancelled and the one calendar event shows the current time
    assert email.ops()[-1][:2] == ("withdraw", "u-1")
    [event] = emu.events(MENTOR)
    assert event["start"]["dateTime"].startswith("2026-12-01T17:00:00-05:00")


def test_missing_calendar_falls_back_to_email(rt, emu, email):
    token = emu.add_user(MENTOR)
    accounts.import_integrations(rt, [{"user_id": "u-1", "provider": "google", "calendar_id": "gone@group",
                                           "refresh_token": token}], enqueue=lambda sid: None)
    book(rt)
    reconcile_due(rt, "sess-42")
    assert_mentor_fell_back_to_email(rt, email, "not found")


def held_placement(rt: Runtime, user_id: str = "u-1"):
    return {p.user_id: p for p in api.get_session("sess-42", rt=rt).placements if p.channel != "email"}[user_id]


def test_undecryptable_credentials_hold_the_copy_until_the_key_is_back(rt, emu, email):
    # Given the mentor's credentials were sealed under a key later dropped from CALSYNC_SECRET_KEYS
    connect_mentor(rt, emu)
    lost_key = new_key()
    with rt.store.tx() as db:
        row = db.query(Integration).one()
        readable = row.credentials
        row.credentials = CredentialBox([lost_key]).seal({"refresh_token": "x"})
    book(rt)
    # When the session is reconciled
    report = reconcile_due(rt, "sess-42")
    # Then this is calsync's fault, not the mentor's: they are not asked to reconnect nor emailed,
    # and the copy is held with the cause, to be tried again
    [row] = accounts.list_integrations(rt)
    assert row.status == "active"
    assert not [op for op in email.ops() if op[1] == "u-1"]
    held = held_placement(rt)
    assert held.state == "held" and "CALSYNC_SECRET_KEYS" in held.last_error
    assert report.retry_in_ms is not None
    # When the operator puts the key back
    with rt.store.tx() as db:
        db.query(Integration).one().credentials = readable
    reconcile_due(rt, "sess-42")
    # Then the event lands by itself, and still nobody was emailed
    assert len(emu.events(MENTOR)) == 1 and held_placement(rt).state == "placed"
    assert not [op for op in email.ops() if op[1] == "u-1"]


def test_a_rejected_oauth_client_holds_placements_and_marks_nobody(sqlite_url, emu, email):
    # Given the deployed client secret is wrong (rotated in the Google console, not here)
    emu.add_client("calsync-test", "the-new-secret")
    rt = google_runtime(sqlite_url, emu, email, google_client_secret="an-old-secret")
    connect_mentor(rt, emu)
    book(rt)
    # When the session is reconciled
    reconcile_due(rt, "sess-42")
    # Then the mentor keeps the integration and gets no email; the placement is held naming the setting
    assert accounts.list_integrations(rt)[0].status == "active"
    assert not [op for op in email.ops() if op[1] == "u-1"]
    held = held_placement(rt)
    assert held.state == "held" and "CALSYNC_GOOGLE_CLIENT_SECRET" in held.last_error
    # When the fix is deployed (a new process with the right secret, same store)
    fixed = google_runtime(sqlite_url, emu, email, google_client_secret="the-new-secret")
    fixed.settings = fixed.settings.model_copy(update={"secret_keys": rt.settings.secret_keys})
    reconcile_due(fixed, "sess-42")
    # Then the copy lands by itself, without anyone consenting again
    assert len(emu.events(MENTOR)) == 1 and held_placement(fixed).state == "placed"


def test_answer_that_is_not_json_is_retried_not_crashed(rt, emu, email):
    connect_mentor(rt, emu)
    book(rt)
    emu.fail_next(1, 200, body="<html>proxy error</html>", content_type="text/html", path_contains="/events")
    report = reconcile_due(rt, "sess-42")
    assert report.retry_in_ms is not None
    reconcile_due(rt, "sess-42")
    assert len(emu.events(MENTOR)) == 1


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


def test_two_workers_racing_make_one_event(sqlite_url, emu, email):
    rt1 = google_runtime(sqlite_url, emu, email)
    rt2 = Runtime(rt1.settings, Store(sqlite_url), channels=rt1._make_channels)
    connect_mentor(rt1, emu)
    book(rt1)
    emu.latency = 0.3
    threads = [threading.Thread(target=reconcile, args=(r, "sess-42")) for r in (rt1, rt2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    emu.latency = 0
    reconcile_due(rt1, "sess-42")
    assert len(emu.events(MENTOR)) == 1
    assert emu.count(status=409) == 0


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


def test_disconnect_withdraws_events_and_falls_back_to_email(rt, emu, email):
    connect_mentor(rt, emu)
    book(rt)
    reconcile_due(rt, "sess-42")
    accounts.disconnect(rt, "u-1", reconcile_now=lambda sid: reconcile_due(rt, sid))
    assert emu.events(MENTOR) == []
    assert ("place", "u-1", 0) in email.ops()
    [row] = accounts.list_integrations(rt)
    assert row.status == "disconnected"


def test_token_death_reroutes_the_persons_other_sessions_too(rt, emu, email):
    # Given the mentor is in two sessions on Google
    from sync.engine.runtime import set_runtime
    from sync.engine.tasks import broker, sync_session

    token = connect_mentor(rt, emu)
    book(rt)
    book(rt, id="sess-43")
    reconcile_due(rt, "sess-42")
    reconcile_due(rt, "sess-43")
    broker.flush_all()
    # When their token dies while the worker handles a change to one session
    emu.revoke(token)
    book(rt, version=2, title="Renamed")
    set_runtime(rt)
    try:
        sync_session("sess-42")
    finally:
        set_runtime(None)
    # Then the other session is queued at once, so it too moves to email
    from dramatiq import Message

    queued = [Message.decode(raw).args[0] for raw in list(broker.queues["calsync"].queue)]
    assert "sess-43" in queued
    placement = {p.channel: p for p in api.get_session("sess-42", rt=rt).placements if p.user_id == "u-1"}
    assert placement["google"].state == "stranded" and placement["email"].state == "placed"
    broker.flush_all()


def test_rate_limit_answers_spend_no_attempt(rt, emu, email):
    # Given Google rate-limits more times in a row than a placement has attempts
    connect_mentor(rt, emu)
    book(rt)
    emu.fail_next(rt.settings.max_attempts + 2, 403, "userRateLimitExceeded", path_contains="/events")
    # When the worker keeps coming back as told
    for _ in range(rt.settings.max_attempts + 3):
        if reconcile_due(rt, "sess-42").retry_in_ms is None:
            break
    # Then the event was placed in the end: slowing down is not failing
    [event] = emu.events(MENTOR)
    view = {p.user_id: p for p in api.get_session("sess-42", rt=rt).placements if p.channel == "google"}
    assert (view["u-1"].state, view["u-1"].attempts) == ("placed", 0)


def test_401_that_survives_the_refresh_is_token_death(rt, emu, email):
    # Given Google keeps answering 401 even after google-auth refreshed the token once
    connect_mentor(rt, emu)
    book(rt)
    emu.fail_next(3, 401, "authError", path_contains="/events")
    # When the session is placed
    reconcile_due(rt, "sess-42")
    # Then the mentor needs a reconnect and got the invite by email
    assert_mentor_fell_back_to_email(rt, email, "401")


# -- the guarantees on Google ------------------------------------------------------------------


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


def test_disconnect_keeps_the_token_until_a_failed_delete_succeeds(rt, emu, email):
    # Given the mentor's event is on Google, and Google's next delete fails with a 503
    connect_mentor(rt, emu)
    book(rt)
    reconcile_due(rt, "sess-42")
    emu.fail_next(1, 503, method="DELETE")
    # When support disconnects them
    result = accounts.disconnect(rt, "u-1", reconcile_now=lambda sid: reconcile(rt, sid))
    # Then the integration is still disconnecting, with credentials, and the event is still there
    assert (result.status, result.remaining) == ("disconnecting", 1)
    [row] = accounts.list_integrations(rt)
    assert row.status == "disconnecting"
    assert len(emu.events(MENTOR)) == 1
    # When the retry comes due and the sweeper runs
    reconcile_due(rt, "sess-42")
    sweep(rt, lambda sid: None)
    # Then the event is gone, the token revoked and wiped, and the mentor has one emailed invite instead
    assert emu.events(MENTOR) == []
    [row] = accounts.list_integrations(rt)
    assert row.status == "disconnected"
    assert [op for op in email.ops() if op[1] == "u-1"] == [("place", "u-1", 0)]


def test_rerouting_after_a_token_death_survives_lost_messages(rt, emu, email):
    # Given the mentor is in two sessions on Google
    token = connect_mentor(rt, emu)
    book(rt)
    book(rt, id="sess-43")
    reconcile_due(rt, "sess-42")
    reconcile_due(rt, "sess-43")
    # When their token dies while one session changes, and every queued message is then lost
    emu.revoke(token)
    book(rt, version=2, title="Renamed")
    reconcile(rt, "sess-42")
    queued: list[str] = []
    sweep(rt, queued.append)
    # Then the sweeper still knows the other session must move to email
    assert queued == ["sess-43"]
    reconcile(rt, "sess-43")
    assert sorted(s for op, uid, s in email.ops() if uid == "u-1") == [0, 0]
    # When they reconnect, and that message is lost too
    fresh = emu.issue_refresh_token(MENTOR)
    [ok] = accounts.import_integrations(rt, [{"user_id": "u-1", "provider": "google",
                                                  "account_email": MENTOR, "refresh_token": fresh}],
                                            enqueue=lambda sid: None)
    assert ok.ok
    queued.clear()
    sweep(rt, queued.append)
    # Then both sessions are swept, the emailed invites are withdrawn and both events are current
    assert sorted(queued) == ["sess-42", "sess-43"]
    for sid in queued:
        reconcile(rt, sid)
    assert [op for op, uid, s in email.ops() if uid == "u-1"].count("withdraw") == 2
    assert sorted(e["summary"] for e in emu.events(MENTOR)) == ["Renamed", "Session 2: Setting goals"]


def test_connecting_google_after_a_failed_invite_leaves_one_copy(rt, emu, email):
    # Given every attempt to mail the mentor failed (the last one may have reached them)
    book(rt)

    def refuse_mentor(op, target):
        if target.user_id == "u-1" and op == "place":
            raise TransientError("SMTP 451 try later")

    email.before = refuse_mentor
    for _ in range(rt.settings.max_attempts):
        reconcile_due(rt, "sess-42")
    email.before = None
    mentor = {p.channel: p for p in api.get_session("sess-42", rt=rt).placements if p.user_id == "u-1"}
    assert mentor["email"].state == "failed"
    # When the mentor connects Google (its message lost: only the store knows)
    connect_mentor(rt, emu)
    queued: list[str] = []
    sweep(rt, queued.append)
    assert queued == ["sess-42"]
    reconcile(rt, "sess-42")
    # Then the emailed copy is withdrawn and the event placed: one copy, on Google
    mentor = {p.channel: p for p in api.get_session("sess-42", rt=rt).placements if p.user_id == "u-1"}
    assert (mentor["email"].state, mentor["email"].live) == ("withdrawn", False)
    # (each refused attempt may have reached them, so the CANCEL carries a SEQUENCE above them all)
    assert [op for op in email.ops() if op[1] == "u-1"] == [("withdraw", "u-1", rt.settings.max_attempts)]
    assert len(emu.events(MENTOR)) == 1
