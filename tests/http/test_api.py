"""The platform API over real HTTP: what each call stores, and what calendars and mailboxes then show.

The app runs under uvicorn on a loopback port, on SQLite and on PostgreSQL,
with the real email channel (``.eml`` files) and the real Google channel against
the Google emulator. After each call the test reads the store, the emulated
calendar and the outbox, the way the platform's users would see them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import func, select

from sync import accounts
from sync.engine.runtime import Runtime, default_channels
from sync.http.app import create_app
from sync.store.crypto import new_key
from sync.store.db import Store
from sync.store.models import SessionRow
from sync.testing.emulators.google import GoogleEmulator
from sync.testing.mail import read_outbox
from sync.testing.settings import google_settings
from tests.support.factories import make_settings, reconcile_due, session_data
from tests.support.http import serving
from tests.support.services import REDIS_URL

TOKENS = ("platform-token-old", "platform-token-new")
MENTOR, MENTEE = "mentor@example.com", "mentee@example.com"


def _fields(env: dict[str, str]) -> dict[str, str]:
    return {k.removeprefix("CALSYNC_").lower(): v for k, v in env.items()}


@pytest.fixture
def rt(db_url: str, tmp_path: Path, emu: GoogleEmulator) -> Runtime:
    """The mentor gets email; the mentee has connected Google (the emulator)."""
    settings = make_settings(db_url, smtp_url=(tmp_path / "out").as_uri(), secret_keys=new_key(),
                             api_tokens=",".join(TOKENS), **_fields(google_settings(emu)))
    runtime = Runtime(settings, Store(db_url), channels=default_channels)
    token = emu.add_user(MENTEE)
    [ok] = accounts.import_integrations(runtime, [{"user_id": "u-2", "provider": "google", "account_email": MENTEE,
                                                   "refresh_token": token}], enqueue=lambda sid: None)
    assert ok.ok
    return runtime


@pytest.fixture
def base(rt: Runtime) -> Iterator[str]:
    with serving(create_app(rt)) as url:
        yield url


def call(method: str, url: str, token: str | None = TOKENS[1], **kwargs: Any) -> requests.Response:
    headers = {**({"Authorization": f"Bearer {token}"} if token else {}), **kwargs.pop("headers", {})}
    return requests.request(method, url, headers=headers, timeout=10, **kwargs)


def invites(rt: Runtime, to: str) -> list[str]:
    folder = Path(rt.settings.require("smtp_url").removeprefix("file://"))
    mails = sorted((m for m in read_outbox(folder) if m.recipient == to), key=lambda m: (m.sequence, m.dtstamp))
    return [f"{m.method}:{m.sequence}" for m in mails]


def stored(rt: Runtime) -> int:
    with rt.store.tx() as db:
        return db.scalar(select(func.count()).select_from(SessionRow)) or 0


def test_a_put_session_lands_on_the_calendar_and_in_the_mailbox(rt: Runtime, base: str, emu: GoogleEmulator):
    # When the platform puts a session
    answer = call("PUT", f"{base}/v1/sessions/sess-42", json=session_data())
    assert (answer.status_code, answer.json()) == (202, {"id": "sess-42", "version": 1, "outcome": "created"})
    reconcile_due(rt, "sess-42")
    # Then the mentee's Google calendar shows it and the mentor got an invite
    [event] = emu.events(MENTEE)
    assert event["summary"] == "Session 2: Setting goals"
    assert invites(rt, MENTOR) == ["REQUEST:0"] and invites(rt, MENTEE) == []
    # And GET says where each copy is
    view = call("GET", f"{base}/v1/sessions/sess-42").json()
    assert view["session"]["title"] == "Session 2: Setting goals"
    copies = {p["user_id"]: p for p in view["placements"]}
    assert copies["u-2"]["channel"] == "google" and copies["u-2"]["event_id"] == event["id"]
    assert copies["u-1"]["channel"] == "email" and copies["u-1"]["state"] == "placed"


def test_the_same_put_again_is_unchanged_and_sends_nothing(rt: Runtime, base: str, emu: GoogleEmulator):
    call("PUT", f"{base}/v1/sessions/sess-42", json=session_data())
    reconcile_due(rt, "sess-42")
    again = call("PUT", f"{base}/v1/sessions/sess-42", json=session_data())
    assert again.json()["outcome"] == "unchanged"
    reconcile_due(rt, "sess-42")
    assert invites(rt, MENTOR) == ["REQUEST:0"] and len(emu.events(MENTEE)) == 1


def test_a_reschedule_moves_the_event_and_mails_an_update(rt: Runtime, base: str, emu: GoogleEmulator):
    call("PUT", f"{base}/v1/sessions/sess-42", json=session_data())
    reconcile_due(rt, "sess-42")
    moved = session_data(version=2, start="2026-12-02T15:00:00-05:00", end="2026-12-02T16:00:00-05:00")
    assert call("PUT", f"{base}/v1/sessions/sess-42", json=moved).json()["outcome"] == "updated"
    reconcile_due(rt, "sess-42")
    [event] = emu.events(MENTEE)
    assert event["start"]["dateTime"].startswith("2026-12-02")
    assert invites(rt, MENTOR) == ["REQUEST:0", "REQUEST:1"]


def test_an_older_version_is_a_409_and_changes_nothing(rt: Runtime, base: str):
    call("PUT", f"{base}/v1/sessions/sess-42", json=session_data(version=3))
    stale = call("PUT", f"{base}/v1/sessions/sess-42", json=session_data(version=2, title="Old"))
    assert stale.status_code == 409 and "version" in stale.json()["error"]
    assert call("GET", f"{base}/v1/sessions/sess-42").json()["session"]["version"] == 3


def test_delete_cancels_everywhere_and_an_unknown_id_is_404(rt: Runtime, base: str, emu: GoogleEmulator):
    call("PUT", f"{base}/v1/sessions/sess-42", json=session_data())
    reconcile_due(rt, "sess-42")
    gone = call("DELETE", f"{base}/v1/sessions/sess-42")
    assert (gone.status_code, gone.json()["outcome"]) == (202, "updated")
    reconcile_due(rt, "sess-42")
    assert emu.events(MENTEE) == [] and invites(rt, MENTOR) == ["REQUEST:0", "CANCEL:1"]
    assert call("DELETE", f"{base}/v1/sessions/nope").status_code == 404
    assert call("GET", f"{base}/v1/sessions/nope").status_code == 404


def test_either_configured_token_works_so_they_rotate(base: str):
    for token in TOKENS:
        assert call("PUT", f"{base}/v1/sessions/sess-42", token=token, json=session_data()).status_code == 202


HUGE = "x" * 1_100_000
BAD = [
    ("no token", dict(token=None, json=session_data()), 401, "error"),
    ("wrong token", dict(token="platform-token-guess", json=session_data()), 401, "error"),
    ("a prefix of a real token", dict(token=TOKENS[1][:-1], json=session_data()), 401, "error"),
    ("not JSON", dict(data="title=x", headers={"Content-Type": "application/x-www-form-urlencoded"}), 415, "error"),
    ("JSON media type, broken JSON", dict(data="{\"id\": ", headers={"Content-Type": "application/json"}), 415,
     "error"),
    ("over the size limit", dict(data=json.dumps({**session_data(), "agenda_html": HUGE}),
                                 headers={"Content-Type": "application/json"}), 413, "error"),
    ("deeply nested", dict(data="[" * 50_000 + "]" * 50_000, headers={"Content-Type": "application/json"}), 422,
     "errors"),
    ("an array, not a session", dict(json=[session_data()]), 422, "errors"),
    ("wrong types", dict(json={**session_data(), "participants": "everyone", "version": "two"}), 422, "errors"),
    ("the path id differs from the body's", dict(json=session_data(id="sess-43")), 422, "errors"),
]


@pytest.mark.parametrize(("case", "kwargs", "status", "shape"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_refused_with_its_status_and_nothing_is_stored(rt: Runtime, base: str, caplog, case: str,
                                                                    kwargs: dict[str, Any], status: int, shape: str):
    caplog.set_level(logging.INFO)
    answer = call("PUT", f"{base}/v1/sessions/sess-42", **kwargs)
    assert answer.status_code == status, answer.text
    assert shape in answer.json()
    if shape == "errors":
        assert all(e["field"] and e["message"] for e in answer.json()["errors"])
    assert stored(rt) == 0
    # The access log names the route and status, never a token or the body.
    logged = caplog.text
    assert all(t not in logged for t in TOKENS) and "Setting goals" not in logged and HUGE[:64] not in logged


def test_wrong_types_name_each_field(base: str):
    answer = call("PUT", f"{base}/v1/sessions/sess-42", json={**session_data(), "participants": "everyone",
                                                             "version": "two"})
    assert {e["field"] for e in answer.json()["errors"]} >= {"participants", "version"}


def test_the_integration_is_read_and_disconnected_through_the_api(rt: Runtime, base: str, emu: GoogleEmulator):
    call("PUT", f"{base}/v1/sessions/sess-42", json=session_data())
    reconcile_due(rt, "sess-42")
    seen = call("GET", f"{base}/v1/people/u-2/integration").json()
    assert (seen["provider"], seen["account"], seen["status"]) == ("google", MENTEE, "active")
    gone = call("DELETE", f"{base}/v1/people/u-2/integration")
    assert gone.status_code == 202 and gone.json()["sessions"] == ["sess-42"]
    reconcile_due(rt, "sess-42")
    # Then the event is withdrawn and the mentee is invited by email instead
    assert emu.events(MENTEE) == [] and invites(rt, MENTEE) == ["REQUEST:0"]
    assert call("GET", f"{base}/v1/people/nobody/integration").status_code == 404
    assert call("GET", f"{base}/v1/people/u-2/integration", token=None).status_code == 401


def test_a_connect_link_on_another_host_is_refused_and_none_is_made(rt: Runtime, base: str):
    answer = call("POST", f"{base}/v1/people/u-3/connect-links",
                  json={"provider": "google", "return_to": "https://phish.example/done"})
    assert answer.status_code == 422 and answer.json()["errors"][0]["field"] == "return_to"
    made = call("POST", f"{base}/v1/people/u-3/connect-links", json={"provider": None, "return_to": None})
    assert made.status_code == 201 and "/connect/" in made.json()["url"]


def test_health_readiness_and_metrics(rt: Runtime, base: str):
    assert call("GET", f"{base}/healthz", token=None).json() == {"status": "ok"}
    assert call("GET", f"{base}/readyz", token=None).status_code == 200
    call("PUT", f"{base}/v1/sessions/sess-42", json=session_data())
    text = call("GET", f"{base}/metrics", token=None).text
    assert 'calsync_http_requests_total{route="/v1/sessions/{session_id}",status="202"}' in text
    assert 'calsync_intake_total{outcome="created"}' in text
    assert 'calsync_webhook_events{status="pending"}' in text and "calsync_placements{" in text


@pytest.mark.redis
def test_readyz_checks_the_redis_broker(db_url: str, redis_client: Any):
    for broker, status in ((REDIS_URL, 200), ("redis://127.0.0.1:1/0", 503)):
        rt = Runtime(make_settings(db_url, broker_url=broker), Store(db_url))
        with serving(create_app(rt)) as url:
            answer = requests.get(f"{url}/readyz", timeout=10)
        assert answer.status_code == status, answer.text
        if status == 503:
            assert answer.json() == {"error": "not ready: broker unreachable"}
