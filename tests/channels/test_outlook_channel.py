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
from sync.testing.channel import MemoryChannel
from sync.testing.emulators.graph import GraphEmulator
from tests.support.factories import make_settings, reconcile_due, session_data

MENTEE = "mentee@contoso.com"


@pytest.fixture
def emu():
    with GraphEmulator() as emulator:
        yield emulator


@pytest.fixture
def email() -> MemoryChannel:
    return MemoryChannel("email")


def outlook_runtime(db_url: str, emu: GraphEmulator, email: MemoryChannel, quota=None, **overrides) -> Runtime:
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
def rt(sqlite_url: str, emu: GraphEmulator, email: MemoryChannel) -> Runtime:
    return outlook_runtime(sqlite_url, emu, email)


def connect_mentee(rt: Runtime, emu: GraphEmulator, user_id: str = "u-2", address: str = MENTEE) -> None:
    token = emu.add_user(address)
    [result] = accounts.import_integrations(rt, [{
        "user_id": user_id, "provider": "outlook", "account_email": address, "calendar_id": None,
        "refresh_token": token}], enqueue=lambda sid: None)
    assert result.ok, result


def book(rt: Runtime, **overrides) -> None:
    assert api.upsert_session(session_data(**overrides), rt=rt, enqueue=False).ok


def test_import_keeps_the_msal_cache_not_the_raw_token(rt, emu, email):
    token = emu.add_user(MENTEE)
    accounts.import_integrations(rt, [{"user_id": "u-2", "provider": "outlook", "refresh_token": token}],
                                     enqueue=lambda sid: None)
    with rt.store.tx() as db:
        row = db.query(Integration).one()
        secret = rt.channel("outlook").box.open(row.credentials)
        assert set(secret) == {"token_cache"} and token.encode() not in row.credentials
        assert row.account_email == MENTEE


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
