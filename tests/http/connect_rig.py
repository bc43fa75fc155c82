"""What the connect-flow tests share: the served app on a runtime, one provider emulator, the outbox.

``connect_rig(db_url, tmp_path, provider)`` starts the provider's emulator (Google on http, Graph on
https with its own CA), serves ``create_app`` on a free loopback port, and builds the runtime once
the port is known: CALSYNC_PUBLIC_URL is the served base URL and both OAuth redirect URIs point at
its ``/oauth/{provider}/callback``. Email goes to a ``file://`` outbox read back as a mail client
would, so "one CANCEL, never two" is checked on the messages themselves. The broker is the
in-process StubBroker: what the callback enqueued is run by a real Dramatiq worker (``drain``).

Used by tests/http/test_connect.py (HTTP with ``requests``) and tests/e2e/test_browser.py (Chromium).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import select

from sync import api
from sync.engine.runtime import Runtime
from sync.http.app import create_app
from sync.store.crypto import new_key
from sync.store.db import Store
from sync.store.models import ConnectLink, Integration
from sync.testing.mail import read_outbox
from sync.testing.settings import google_settings, outlook_settings
from tests.support.factories import make_settings, reconcile_due, session_data
from tests.support.http import serving

MENTOR = "mentor@example.com"  # u-1 in the contract's example session
MENTEE = "mentee@example.com"  # u-2
API_TOKEN = "platform-token-for-tests"
CLIENT_ID, CLIENT_SECRET = "calsync-test", "s3cret"
RETURN_HOST = "platform.example"
TITLE = session_data()["title"]


@dataclass
class Provider:
    """One provider's emulator, as the connect flow meets it."""

    name: str  # google | outlook
    emu: Any
    #: What a client must trust to reach the emulator (Graph serves https with its own CA).
    verify: str | bool
    settings: dict[str, Any]

    def titles(self, email: str) -> list[str]:
        """The titles of the events on ``email``'s emulated calendar."""
        key = "summary" if self.name == "google" else "subject"
        return [e[key] for e in self.emu.events(email)]


@contextmanager
def emulator(name: str) -> Iterator[Provider]:
    """The provider's emulator with the mentor and mentee as its users; the mentor consents."""
    if name == "google":
        from sync.testing.emulators.google import GoogleEmulator

        with GoogleEmulator() as emu:
            yield _provider(name, emu, False, google_settings(emu, CLIENT_ID, CLIENT_SECRET))
            assert emu.internal_errors == [], emu.internal_errors[0]
        return
    from sync.testing.emulators.graph import GraphEmulator

    with GraphEmulator() as emu:
        yield _provider(name, emu, emu.ca_file, outlook_settings(emu, CLIENT_ID, CLIENT_SECRET))


def _provider(name: str, emu: Any, verify: str | bool, env: dict[str, str]) -> Provider:
    for user in (MENTOR, MENTEE):
        emu.add_user(user)
    emu.consent_user = MENTOR
    return Provider(name, emu, verify, {k.removeprefix("CALSYNC_").lower(): v for k, v in env.items()})


@dataclass
class Rig:
    base: str
    rt: Runtime
    provider: Provider
    outbox: Path

    # -- the platform's side -------------------------------------------------------------------

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return requests.request(method, self.base + path, headers={"Authorization": f"Bearer {API_TOKEN}"},
                                timeout=10, **kwargs)

    def new_link(self, user_id: str = "u-1", **body: Any) -> str:
        answer = self.api("POST", f"/v1/people/{user_id}/connect-links", json=body)
        assert answer.status_code == 201, answer.text
        url = answer.json()["url"]
        assert url.startswith(f"{self.rt.settings.base_url}/connect/"), url
        return url

    def book(self, **overrides: Any) -> None:
        """The session is booked and reconciled while nobody is connected: both people are mailed an invite."""
        assert api.upsert_session(session_data(**overrides), rt=self.rt, enqueue=False).ok
        reconcile_due(self.rt, overrides.get("id", "sess-42"))

    # -- the person's browser ------------------------------------------------------------------

    def consent(self, consent_url: str) -> str:
        """The person agrees on the provider's page (it decides at once); returns where it sends the browser."""
        assert consent_url.startswith(self.provider.settings["google_auth_url" if self.provider.name == "google"
                                                              else "ms_authority_url"]), consent_url
        answer = requests.get(consent_url, allow_redirects=False, timeout=10, verify=self.provider.verify)
        assert answer.status_code == 302, answer.text
        location = answer.headers["Location"]
        return location

    # -- what happened -------------------------------------------------------------------------

    def integrations(self) -> list[tuple[str, str, str | None, str]]:
        """(user, provider, account, status) of every row in the integrations table."""
        with self.rt.store.tx() as db:
            return [(r.user_id, r.provider, r.account_email, r.status)
                    for r in db.scalars(select(Integration).order_by(Integration.id))]

    def links(self) -> list[ConnectLink]:
        with self.rt.store.tx() as db:
            rows = list(db.scalars(select(ConnectLink).order_by(ConnectLink.created_at)))
            db.expunge_all()
            return rows

    def invites(self, email: str) -> list[tuple[str, int]]:
        """(METHOD, SEQUENCE) of each invite mailed to ``email``, in sending order."""
        return [(m.method, m.sequence) for m in read_outbox(self.outbox) if m.recipient == email]

    def drain(self) -> list[str]:
        """Run what the callback queued on a real Dramatiq worker, until the queue is empty; the session ids."""
        import dramatiq
        from dramatiq import Message

        from sync.engine.broker import QUEUE
        from sync.engine.runtime import set_runtime
        from sync.engine.tasks import broker

        queued = [Message.decode(raw).args[0] for raw in list(broker.queues[QUEUE].queue)]
        set_runtime(self.rt)
        worker = dramatiq.Worker(broker, worker_timeout=20, worker_threads=1)
        worker.start()
        try:
            broker.join(QUEUE, fail_fast=True, timeout=20_000)
        finally:
            worker.stop()
            broker.flush_all()
            set_runtime(None)
        return queued


def runtime_for(db_url: str, tmp_path: Path, base: str, provider: Provider, **overrides: Any) -> Runtime:
    settings = make_settings(db_url, **{
        "smtp_url": f"file://{tmp_path / 'out'}", "secret_keys": new_key(), "api_tokens": API_TOKEN,
        "public_url": base, "return_hosts": RETURN_HOST, "io_timeout_seconds": 5.0,
        "google_redirect_uri": f"{base}/oauth/google/callback", "ms_redirect_uri": f"{base}/oauth/outlook/callback",
        **provider.settings, **overrides})
    return Runtime(settings, Store(db_url))


@contextmanager
def connect_rig(db_url: str, tmp_path: Path, provider: str, **overrides: Any) -> Iterator[Rig]:
    from sync.engine.tasks import broker

    broker.flush_all()
    with emulator(provider) as prov:
        app = create_app()
        with serving(app) as base:
            rt = runtime_for(db_url, tmp_path, base, prov, **overrides)
            # The app reads its runtime per request, so it can be attached once the port is known.
            app.state.runtime = lambda: rt
            try:
                yield Rig(base, rt, prov, tmp_path / "out")
            finally:
                broker.flush_all()
                rt.store.engine.dispose()


def leaks(records: list[logging.LogRecord], *secrets: str) -> list[str]:
    """Every log line calsync, uvicorn or a library wrote while serving that holds one of ``secrets``.

    The test's own HTTP client is left out (urllib3 on the main thread logs the URLs the test
    opens); so are the emulators, which are the provider and may see their own codes.
    """
    found = []
    for record in records:
        if record.name.startswith("urllib3") and record.threadName == "MainThread":
            continue
        if record.name.startswith("sync.testing"):
            continue
        text = record.getMessage() + (record.exc_text or "") + repr(getattr(record, "__dict__", {}))
        found.extend(f"{record.name}: {record.getMessage()[:200]}" for s in secrets if s and s in text)
    return found
