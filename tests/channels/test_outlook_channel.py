"""The Outlook channel through the real msal and requests against the local Graph emulator."""

from __future__ import annotations

import threading

import pytest
import requests

from sync import accounts, api
from sync.engine.reconcile import reconcile
from sync.engine.runtime import Runtime
from sync.providers.outlook import OutlookChannel
from sync.quota import MemoryQuota
from sync.store.crypto import CredentialBox, new_key
from sync.store.db import Store
from sync.store.models import Integration
from sync.testing.emulators.graph import GraphEmulator
from tests.support.factories import RecordingChannel, make_settings, reconcile_due, session_data

MENTEE = "mentee@contoso.com"


@pytest.fixture
def emu():
    with GraphEmulator() as emulator:
        yield emulator


@pytest.fixture
def email() -> RecordingChannel:
    return RecordingChannel("email")


def outlook_runtime(db_url: str, emu: GraphEmulator, email: RecordingChannel, quota=None, **overrides) -> Runtime:
    settings = make_settings(db_url, **{
        "ms_client_id": "calsync-test", "ms_client_secret": "s3cret", "ms_tenant": "common",
        "ms_authority_url": emu.authority_url, "graph_url": emu.graph_url, "ms_ca_bundle": emu.ca_file,
        "secret_keys": new_key(), "io_timeout_seconds": 2.0, **overrides})
    shared = quota or MemoryQuota()
    return Runtime(settings, Store(db_url), channels=lambda s, st: {
        "email": email,
        "outlook": OutlookChannel(s, st, CredentialBox([k.get_secret_value() for k in s.secret_keys]), shared),
    })


@pytest.fixture
def rt(sqlite_url: str, emu: GraphEmulator, email: RecordingChannel) -> Runtime:
    return outlook_runtime(sqlite_url, emu, email)


def connect_mentee(rt: Runtime, emu: GraphEmulator, user_id: str = "u-2", address: str = MENTEE) -> None:
    token = emu.add_user(address)
    [result] = accounts.import_integrations(rt, [{
        "user_id": user_id, "provider": "outlook", "account_email": address, "calendar_id": None,
        "refresh_token": token}], enqueue=lambda sid: None)
    assert result.ok, result


def book(rt: Runtime, **overrides) -> None:
    assert api.upsert_session(session_data(**overrides), rt=rt, enqueue=False).ok


def placement(rt: Runtime, user_id: str = "u-2"):
    return {p.user_id: p for p in api.get_session("sess-42", rt=rt).placements if p.channel != "email"}[user_id]


def graph_calls(emu: GraphEmulator) -> list[tuple[str, int]]:
    return [(r.method, r.status) for r in emu.requests(kind="api")]


def test_import_keeps_the_msal_cache_not_the_raw_token(rt, emu, email):
    token = emu.add_user(MENTEE)
    accounts.import_integrations(rt, [{"user_id": "u-2", "provider": "outlook", "refresh_token": token}],
                                     enqueue=lambda sid: None)
    with rt.store.tx() as db:
        row = db.query(Integration).one()
        secret = rt.channel("outlook").box.open(row.credentials)
        assert set(secret) == {"token_cache"} and token.encode() not in row.credentials
        assert row.account_email == MENTEE


def test_lifecycle_one_event_then_none_with_no_attendees(rt, emu, email):
    # Given the mentee connected Outlook
    connect_mentee(rt, emu)
    book(rt)
    reconcile_due(rt, "sess-42")
    [event] = emu.events(MENTEE)
    assert event["subject"] == "Session 2: Setting goals" and not event.get("attendees")
    assert emu.count(has_attendees=True) == 0
    # When rescheduled, then the agenda edited
    book(rt, version=2, start="2026-12-01T17:00:00-05:00", end="2026-12-01T18:00:00-05:00")
    reconcile_due(rt, "sess-42")
    book(rt, version=3, start="2026-12-01T17:00:00-05:00", end="2026-12-01T18:00:00-05:00",
         agenda_html="<p>Bring your goals</p>")
    reconcile_due(rt, "sess-42")
    [event] = emu.events(MENTEE)
    assert event["start"]["dateTime"].startswith("2026-12-01T22:00:00")
    assert "Bring your goals" in event["body"]["content"]
    # Then an unchanged resync makes no call at all
    emu.clear_log()
    reconcile_due(rt, "sess-42")
    assert graph_calls(emu) == []
    # And cancelling removes the event; only the email-only mentor was mailed
    api.cancel_session("sess-42", rt=rt, enqueue=False)
    reconcile_due(rt, "sess-42")
    assert emu.events(MENTEE) == []
    assert {uid for _, uid, _ in email.ops()} == {"u-1"}


def test_each_change_costs_one_call(rt, emu, email):
    connect_mentee(rt, emu)
    book(rt)
    reconcile_due(rt, "sess-42")
    emu.clear_log()
    book(rt, version=2, title="Renamed")
    reconcile_due(rt, "sess-42")
    assert graph_calls(emu) == [("PATCH", 200)]


@pytest.mark.parametrize(("status", "code", "retry_after"), [
    (429, "TooManyRequests", "3"), (503, "ServiceUnavailable", "2"), (500, "InternalServerError", None),
    (504, "GatewayTimeout", None)])
def test_throttling_and_server_errors_are_retried(rt, emu, email, status, code, retry_after):
    connect_mentee(rt, emu)
    book(rt)
    emu.fail_next(1, status, code, retry_after=retry_after, method="POST")
    report = reconcile_due(rt, "sess-42")
    assert report.retry_in_ms is not None
    if retry_after:
        assert report.retry_in_ms >= int(retry_after) * 1000
    assert placement(rt).state == "retrying" and str(status) in placement(rt).last_error
    reconcile_due(rt, "sess-42")
    assert len(emu.events(MENTEE)) == 1


def test_timeout_is_retried(rt, emu, email):
    connect_mentee(rt, emu)
    book(rt)
    emu.timeout_next(1, seconds=4, applied=False, method="POST")
    assert reconcile_due(rt, "sess-42").retry_in_ms is not None
    reconcile_due(rt, "sess-42")
    assert len(emu.events(MENTEE)) == 1


def test_lost_response_on_create_is_found_by_its_tag_not_created_twice(rt, emu, email):
    connect_mentee(rt, emu)
    book(rt)
    emu.lose_next_response(1, method="POST")
    assert reconcile_due(rt, "sess-42").retry_in_ms is not None
    reconcile_due(rt, "sess-42")
    assert len(emu.events(MENTEE)) == 1
    assert placement(rt).external_id == emu.events(MENTEE)[0]["id"]


def test_event_deleted_by_the_person_is_drift_and_resync_recreates_it(rt, emu, email):
    connect_mentee(rt, emu)
    book(rt)
    reconcile_due(rt, "sess-42")
    [event] = emu.events(MENTEE)
    emu.delete_event(MENTEE, event["id"])
    book(rt, version=2, title="Renamed")
    reconcile_due(rt, "sess-42")
    assert placement(rt).state == "drift" and emu.events(MENTEE) == []
    reconcile_due(rt, "sess-42", retry_failed=True)
    [again] = emu.events(MENTEE)
    assert again["subject"] == "Renamed"


def test_delete_of_a_missing_event_is_success(rt, emu, email):
    connect_mentee(rt, emu)
    book(rt)
    reconcile_due(rt, "sess-42")
    emu.delete_event(MENTEE, emu.events(MENTEE)[0]["id"])
    api.cancel_session("sess-42", rt=rt, enqueue=False)
    report = reconcile_due(rt, "sess-42")
    assert not report.errors and placement(rt).state == "withdrawn"


@pytest.mark.parametrize("kill", ["revoke", "expire_refresh", "require_interaction", "remove_consent"])
def test_token_death_switches_to_email_and_reconnect_switches_back(rt, emu, email, kill):
    connect_mentee(rt, emu)
    book(rt)
    reconcile_due(rt, "sess-42")
    # Given the grant dies (revoked, expired, MFA required, consent withdrawn)
    getattr(emu, kill)(MENTEE)
    emu.expire_access_tokens(MENTEE)
    book(rt, version=2, title="Renamed")
    reconcile_due(rt, "sess-42")
    # Then the mentee needs a reconnect and got an emailed invite in the same reconcile
    rows = {r.user_id: r for r in accounts.list_integrations(rt)}
    assert rows["u-2"].status == "needs_reconnect"
    assert ("place", "u-2", 0) in email.ops()
    # When they reconnect
    accounts.import_integrations(rt, [{"user_id": "u-2", "provider": "outlook",
                                           "refresh_token": emu.issue_refresh_token(MENTEE)}],
                                     enqueue=lambda sid: None)
    reconcile_due(rt, "sess-42")
    # Then the invite is cancelled and their one event shows the current title
    assert email.ops()[-1][:2] == ("withdraw", "u-2")
    [event] = emu.events(MENTEE)
    assert event["subject"] == "Renamed"


def test_unlicensed_mailbox_falls_back_to_email(rt, emu, email):
    connect_mentee(rt, emu)
    emu.set_licensed(MENTEE, False)
    book(rt)
    reconcile_due(rt, "sess-42")
    rows = {r.user_id: r for r in accounts.list_integrations(rt)}
    assert rows["u-2"].status == "needs_reconnect" and "MailboxNotEnabledForRESTAPI" in rows["u-2"].reason
    assert ("place", "u-2", 0) in email.ops()


def test_bad_request_fails_the_placement(rt, emu, email):
    connect_mentee(rt, emu)
    book(rt)
    emu.fail_next(1, 400, "ErrorInvalidRequest", method="POST")
    assert reconcile_due(rt, "sess-42").retry_in_ms is None
    assert placement(rt).state == "failed" and "400" in placement(rt).last_error


def test_answer_that_is_not_json_is_retried(rt, emu, email):
    connect_mentee(rt, emu)
    book(rt)
    emu.fail_next(1, 201, body="<html>gateway</html>", content_type="text/html", method="POST")
    assert reconcile_due(rt, "sess-42").retry_in_ms is not None


def test_undecryptable_token_cache_is_held_not_blamed_on_the_person(rt, emu, email):
    # Given the mentee's token cache was sealed under a key that is no longer configured
    connect_mentee(rt, emu)
    with rt.store.tx() as db:
        db.query(Integration).one().credentials = CredentialBox([new_key()]).seal({"token_cache": "{}"})
    book(rt)
    # When the session is reconciled
    reconcile_due(rt, "sess-42")
    # Then the integration stays active, nothing is emailed to the mentee, and the copy is held
    assert accounts.list_integrations(rt)[0].status == "active"
    assert not [op for op in email.ops() if op[1] == "u-2"]
    assert placement(rt).state == "held" and "CALSYNC_SECRET_KEYS" in placement(rt).last_error


def test_invalid_client_secret_holds_placements_and_resumes_once_fixed(sqlite_url, emu, email):
    # Given the mentee connected while the app's secret was right
    emu.add_client("calsync-test", "s3cret")
    rt = outlook_runtime(sqlite_url, emu, email)
    connect_mentee(rt, emu)
    book(rt)
    # When the secret expires in Azure (AADSTS7000215 invalid_client) and the session is reconciled
    emu.clients["calsync-test"]["secret"] = "rotated"
    emu.expire_access_tokens(MENTEE)
    reconcile_due(rt, "sess-42")
    # Then nobody is marked for a reconnect and the copy is held naming the setting
    assert accounts.list_integrations(rt)[0].status == "active"
    assert not [op for op in email.ops() if op[1] == "u-2"]
    assert placement(rt).state == "held" and "CALSYNC_MS_CLIENT_SECRET" in placement(rt).last_error
    # When the new secret is deployed
    fixed = outlook_runtime(sqlite_url, emu, email, ms_client_secret="rotated")
    fixed.settings = fixed.settings.model_copy(update={"secret_keys": rt.settings.secret_keys})
    reconcile_due(fixed, "sess-42")
    # Then the event lands without the mentee consenting again
    assert placement(fixed).state == "placed" and len(emu.events(MENTEE)) == 1


def test_never_more_than_four_requests_in_flight_per_mailbox(sqlite_url, emu, email):
    # Given one mailbox in 12 sessions and 8 worker threads, with a slow Graph
    rt = outlook_runtime(sqlite_url, emu, email)
    connect_mentee(rt, emu)
    for i in range(12):
        assert api.upsert_session(session_data(id=f"s-{i}"), rt=rt, enqueue=False).ok
    emu.latency = 0.15
    threads = [threading.Thread(target=reconcile, args=(rt, f"s-{i}")) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    # Then Outlook never saw a fifth concurrent request, nor answered 429
    assert emu.max_in_flight(MENTEE) <= 4
    assert emu.count(status=429) == 0
    assert len(emu.events(MENTEE)) == 12


def test_connect_flow_through_msal_with_pkce(rt, emu, email):
    emu.add_user(MENTEE)
    url, state = accounts.connect_url(rt, "u-2", "outlook")
    assert "code_challenge_method=S256" in url
    redirect = emu.session().get(url, allow_redirects=False, timeout=5).headers["Location"]
    accounts.complete_connect(rt, redirect, enqueue=lambda sid: None)
    [row] = accounts.list_integrations(rt)
    assert (row.status, row.account_email) == ("active", MENTEE)
    # The flow was single-use
    with pytest.raises(Exception, match="state"):
        accounts.complete_connect(rt, redirect, enqueue=lambda sid: None)


def test_group_session_one_event_per_calendar_one_invite(sqlite_url, emu, email):
    # Given a Google mentor, two Outlook members and one email-only member
    from sync.providers.google import GoogleChannel
    from sync.testing.emulators.google import GoogleEmulator

    with GoogleEmulator() as gemu:
        settings = make_settings(
            sqlite_url, ms_client_id="calsync-test", ms_client_secret="s3cret", ms_authority_url=emu.authority_url,
            graph_url=emu.graph_url, ms_ca_bundle=emu.ca_file, google_client_id="g", google_client_secret="gs",
            google_api_url=gemu.url, google_token_url=gemu.token_url, secret_keys=new_key())
        box = CredentialBox([k.get_secret_value() for k in settings.secret_keys])
        q = MemoryQuota()
        rt = Runtime(settings, Store(sqlite_url), channels=lambda s, st: {
            "email": email, "outlook": OutlookChannel(s, st, box, q), "google": GoogleChannel(s, st, box, q)})
        people = [("m", "mentor@school.example.com"), ("a", "a@contoso.com"), ("b", "b@contoso.com"),
                  ("c", "c@example.com")]
        accounts.import_integrations(rt, [
            {"user_id": "m", "provider": "google", "refresh_token": gemu.add_user("mentor@school.example.com")},
            {"user_id": "a", "provider": "outlook", "refresh_token": emu.add_user("a@contoso.com")},
            {"user_id": "b", "provider": "outlook", "refresh_token": emu.add_user("b@contoso.com")},
        ], enqueue=lambda sid: None)
        book(rt, participants=[{"user_id": u, "email": e} for u, e in people])
        reconcile_due(rt, "sess-42")
        # Then one event in each calendar and one invite, nothing more
        assert len(gemu.events("mentor@school.example.com")) == 1
        assert len(emu.events("a@contoso.com")) == 1 and len(emu.events("b@contoso.com")) == 1
        assert email.ops() == [("place", "c", 0)]
        assert gemu.count(has_attendees=True) == 0 and emu.count(has_attendees=True) == 0


def test_requests_session_trusts_only_the_emulator_ca(emu):
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(emu.openid_configuration_url, timeout=5)


def test_a_first_create_costs_one_call(rt, emu, email):
    # Given a mailbox and a new session
    connect_mentee(rt, emu)
    book(rt)
    # When it is placed for the first time, no lookup precedes the create (nothing can exist yet)
    reconcile_due(rt, "sess-42")
    assert graph_calls(emu) == [("POST", 201)]


def test_401_after_a_forced_refresh_is_token_death(rt, emu, email):
    # Given Graph answers 401 to the call and again after calsync forced a token refresh
    connect_mentee(rt, emu)
    book(rt)
    emu.fail_next(2, 401, "InvalidAuthenticationToken", method="POST")
    reconcile_due(rt, "sess-42")
    # Then the mentee needs a reconnect and got the invite by email
    rows = {r.user_id: r for r in accounts.list_integrations(rt)}
    assert rows["u-2"].status == "needs_reconnect" and "401" in rows["u-2"].reason
    assert ("place", "u-2", 0) in email.ops()


def test_one_401_is_cured_by_a_refresh(rt, emu, email):
    # Given Graph rejects the cached access token once
    connect_mentee(rt, emu)
    book(rt)
    emu.fail_next(1, 401, "InvalidAuthenticationToken", method="POST")
    reconcile_due(rt, "sess-42")
    # Then calsync refreshed and placed the event, still on Outlook
    assert len(emu.events(MENTEE)) == 1 and email.ops() == [("place", "u-1", 0)]


# -- the guarantees on Outlook -----------------------------------------------------------------


MENTOR_ONLY = [{"user_id": "u-1", "email": "mentor@example.com", "name": "Ada Lovelace", "role": "mentor"}]


def test_a_participant_removed_and_added_again_gets_a_new_event(rt, emu, email):
    # Given the mentee's session is on their Outlook calendar
    connect_mentee(rt, emu)
    book(rt)
    reconcile_due(rt, "sess-42")
    # When they are removed from the session, then added back
    book(rt, version=2, participants=MENTOR_ONLY)
    reconcile_due(rt, "sess-42")
    assert emu.events(MENTEE) == []
    book(rt, version=3)
    reconcile_due(rt, "sess-42")
    # Then their calendar holds the session again, once, and the placement is settled
    assert len(emu.events(MENTEE)) == 1
    assert placement(rt).state == "placed"


def test_a_session_cancelled_then_scheduled_again_is_back_on_the_calendar(rt, emu, email):
    # Given a session on the mentee's Outlook calendar is cancelled
    connect_mentee(rt, emu)
    book(rt)
    reconcile_due(rt, "sess-42")
    book(rt, version=2, status="cancelled")
    reconcile_due(rt, "sess-42")
    assert emu.events(MENTEE) == []
    # When the platform schedules it again
    book(rt, version=3, title="Back on")
    reconcile_due(rt, "sess-42")
    # Then the event is back, once, with the current title
    assert [e["subject"] for e in emu.events(MENTEE)] == ["Back on"]


def test_a_dead_google_token_then_connecting_outlook_settles_without_a_storm(sqlite_url, emu, email):
    # Given the mentee's two sessions are on Google, whose grant then dies unnoticed
    from dramatiq import Worker

    from sync.engine.broker import QUEUE
    from sync.engine.runtime import set_runtime
    from sync.engine.tasks import broker, sync_session
    from sync.providers.google import GoogleChannel
    from sync.testing.emulators.google import GoogleEmulator

    with GoogleEmulator() as gemu:
        settings = make_settings(sqlite_url, **{
            "ms_client_id": "calsync-test", "ms_client_secret": "s3cret", "ms_authority_url": emu.authority_url,
            "graph_url": emu.graph_url, "ms_ca_bundle": emu.ca_file, "google_client_id": "calsync-test",
            "google_client_secret": "s3cret", "google_api_url": gemu.url, "google_token_url": gemu.token_url,
            "google_revoke_url": gemu.revoke_url, "secret_keys": new_key(), "io_timeout_seconds": 2.0})

        def channels(s, st):
            box = CredentialBox([k.get_secret_value() for k in s.secret_keys])
            return {"email": email, "google": GoogleChannel(s, st, box, MemoryQuota()),
                    "outlook": OutlookChannel(s, st, box, MemoryQuota())}

        rt = Runtime(settings, Store(sqlite_url), channels=channels)
        token = gemu.add_user(MENTEE)
        [ok] = accounts.import_integrations(rt, [{"user_id": "u-2", "provider": "google",
                                                      "account_email": MENTEE, "refresh_token": token}],
                                                enqueue=lambda sid: None)
        assert ok.ok
        book(rt)
        book(rt, id="sess-43")
        reconcile_due(rt, "sess-42")
        reconcile_due(rt, "sess-43")
        assert len(gemu.events(MENTEE)) == 2
        gemu.revoke(token)
        gemu.expire_access_tokens(MENTEE)
        # When they connect Outlook, and the real worker takes the re-plans
        connect_mentee(rt, emu)
        set_runtime(rt)
        worker = Worker(broker, worker_timeout=20, worker_threads=2)
        worker.start()
        try:
            for sid in ("sess-42", "sess-43"):
                sync_session.send(sid)
            broker.join(QUEUE, fail_fast=True, timeout=20_000)
        finally:
            worker.stop()
            broker.flush_all()
            set_runtime(None)
        # Then both sessions are on Outlook, nothing was emailed, and the dead grant was tried
        # a bounded number of times (no growing storm of deletes and refreshes)
        assert len(emu.events(MENTEE)) == 2
        assert not [op for op in email.ops() if op[1] == "u-2"]
        assert gemu.count(path_contains="/token") <= 4
        google = next(i for i in accounts.list_integrations(rt) if i.provider == "google")
        assert google.status == "disconnected"
