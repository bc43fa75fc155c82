"""Webhooks to the platform: written with their cause, signed with every secret, delivered at least
once to a real HTTP receiver through failures, a lost message and a worker that gives up; and the
optional reconnect email, one a day per person."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dramatiq
import pytest
from sqlalchemy import select, update

from sync import api
from sync.accounts import links
from sync.accounts.disconnect import disconnect
from sync.accounts.grants import save_grant
from sync.email_fallback import EmailChannel
from sync.engine import reconnect, webhooks
from sync.engine.broker import QUEUE
from sync.engine.reconcile import reconcile
from sync.engine.runtime import Runtime, set_runtime
from sync.engine.sweep import sweep
from sync.errors import PermanentError, TransientError
from sync.providers.connector import Grant
from sync.store import webhooks as events
from sync.store.crypto import new_key
from sync.store.db import Store, utcnow
from sync.store.integrations import mark_dead
from sync.store.models import Integration, Person, WebhookEvent
from sync.testing.channel import MemoryChannel
from tests.support.factories import make_settings, reconcile_due, session_data

SECRETS = ["whsec-old", "whsec-new"]


# -- the platform's side: a verifier written as the README tells a receiver to -----------------

def verify(header: str, body: bytes, secret: str, tolerance: int = 300) -> bool:
    parts = [p.split("=", 1) for p in header.split(",") if "=" in p]
    stamps = [v for k, v in parts if k == "t"]
    if len(stamps) != 1 or not stamps[0].isdigit() or abs(time.time() - int(stamps[0])) > tolerance:
        return False
    expected = hmac.new(secret.encode(), f"{stamps[0]}.".encode() + body, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(expected, v) for k, v in parts if k == "v1")


class Receiver:
    """The platform's endpoint on 127.0.0.1: verifies every request with each of its secrets, answers
    ``script`` in order (a status, or ``"timeout"``: it takes the event, then answers too late), then 200."""

    def __init__(self, secrets: list[str], script: list[int | str] | None = None) -> None:
        self.secrets, self.script = secrets, list(script or [])
        self.requests: list[tuple[dict, bytes]] = []
        self.accepted: dict[str, dict] = {}
        self.rejected: list[str] = []
        self.seen: Counter[str] = Counter()
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = outer.take(dict(self.headers), body)
                if status == "timeout":
                    time.sleep(1.5)
                    status = 200
                try:
                    self.send_response(int(status))
                    self.end_headers()
                except OSError:
                    pass  # calsync stopped waiting

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/calsync-events"

    def take(self, headers: dict, body: bytes) -> int | str:
        with self.lock:
            self.requests.append((headers, body))
            signature = headers.get("Calsync-Signature", "")
            if not all(verify(signature, body, s) for s in self.secrets):
                self.rejected.append(signature)
                return 400
            status = self.script.pop(0) if self.script else 200
            event = json.loads(body)
            self.seen[event["id"]] += 1
            if status in (200, "timeout"):
                self.accepted.setdefault(event["id"], event)  # dedupe by id
            return status

    def __enter__(self) -> Receiver:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver(SECRETS) as r:
        yield r


def runtime_for(db_url: str, receiver: Receiver | None = None, channel: object = None, **overrides) -> Runtime:
    settings = make_settings(db_url, secret_keys=new_key(), webhook_secrets=",".join(SECRETS),
                             webhook_url=receiver.url if receiver else None, io_timeout_seconds=0.5, **overrides)
    return Runtime(settings, Store(db_url), channels=lambda s, st: {"email": channel or MemoryChannel()})


@pytest.fixture
def rt(db_url: str, receiver: Receiver) -> Runtime:
    return runtime_for(db_url, receiver)


@contextmanager
def worker(rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> Iterator[dramatiq.Broker]:
    """Embedded worker threads on the stub broker, with delivery's backoff cut to milliseconds."""
    broker = webhooks.broker
    monkeypatch.setitem(webhooks.deliver_webhook.options, "min_backoff", 10)
    monkeypatch.setitem(webhooks.deliver_webhook.options, "max_backoff", 40)
    before = list(broker.middleware)
    set_runtime(rt)
    w = dramatiq.Worker(broker, worker_timeout=20, worker_threads=2)
    w.start()
    try:
        yield broker
        broker.join(QUEUE, fail_fast=False, timeout=30_000)
        w.join()
    finally:
        w.stop()
        broker.middleware[:] = [m for m in broker.middleware if m in before]
        broker.flush_all()
        set_runtime(None)


def rows(rt: Runtime, type: str | None = None) -> list[WebhookEvent]:
    with rt.store.tx() as db:
        query = select(WebhookEvent).order_by(WebhookEvent.created_at)
        return list(db.scalars(query.where(WebhookEvent.type == type) if type else query))


def connect(rt: Runtime, user_id: str = "u-1") -> int:
    return save_grant(rt, user_id, "google", Grant({"refresh_token": "t"}, f"{user_id}@gmail.example"))


def kill(rt: Runtime, integration_id: int) -> None:
    with rt.store.tx() as db:
        mark_dead(db, integration_id, "invalid_grant")


# -- signing ----------------------------------------------------------------------------------

def test_every_secret_signs_in_order_and_a_receiver_detects_a_forgery():
    body = b'{"id":"e-1","type":"integration.connected","created":"2026-01-01T00:00:00Z","data":{}}'
    header = webhooks.signature(SECRETS, body, int(time.time()))
    t, *macs = header.split(",")
    # Rotation: one v1 per secret, in order, so a receiver on either secret accepts
    assert t.startswith("t=") and len(macs) == 2 and all(m.startswith("v1=") for m in macs)
    assert verify(header, body, "whsec-old") and verify(header, body, "whsec-new")
    # A receiver on another secret, an altered body, an altered timestamp and a stale one all refuse
    assert not verify(header, body, "whsec-other")
    assert not verify(header, body.replace(b"e-1", b"e-2"), "whsec-new")
    assert not verify(header.replace(t, f"t={int(t[2:]) + 1}"), body, "whsec-new")
    stale = webhooks.signature(SECRETS, body, int(time.time()) - 3600)
    assert not verify(stale, body, "whsec-new")
    forged = webhooks.signature(["whsec-guess"], body, int(time.time()))
    assert not verify(forged, body, "whsec-old") and not verify(forged, body, "whsec-new")


def test_retries_span_more_than_a_day_whatever_the_jitter(monkeypatch):
    import dramatiq.common

    options = webhooks.deliver_webhook.options
    assert (options["max_retries"], options["min_backoff"], options["max_backoff"]) == (
        webhooks.MAX_RETRIES, webhooks.MIN_BACKOFF_MS, webhooks.MAX_BACKOFF_MS)
    # Dramatiq's own backoff under its two worst jitter draws (the lowest; or a high one that
    # passes the cap, then the lowest share of the cap): the shortest each retry can wait
    def backoff(r: int, draw) -> int:
        monkeypatch.setattr(dramatiq.common, "uniform", draw)
        return dramatiq.common.compute_backoff(r, factor=options["min_backoff"],
                                               max_backoff=options["max_backoff"])[1]

    shortest = sum(min(backoff(r, lambda low, high: low), backoff(r, lambda low, high: high if low == 1 else low))
                   for r in range(options["max_retries"]))
    assert shortest == webhooks.min_retry_span_ms() >= 24 * 3600 * 1000
    # and the count is the smallest that does it
    assert webhooks.min_retry_span_ms(webhooks.MAX_RETRIES - 1) < 24 * 3600 * 1000


# -- written with the cause -------------------------------------------------------------------

def test_each_cause_writes_its_event_in_its_own_transaction(db_url, receiver):
    channel = MemoryChannel()
    rt = runtime_for(db_url, receiver, channel)
    iid = connect(rt)
    kill(rt, iid)
    disconnect(rt, "u-1", reconcile_now=lambda sid: None)
    api.upsert_session(session_data(), rt=rt, enqueue=False)
    channel.fail_with = [PermanentError("550 mailbox unavailable")]
    reconcile(rt, "sess-42")
    got = [(r.type, r.data) for r in rows(rt) if r.type in events.PLATFORM]
    assert got == [
        ("integration.connected", {"user_id": "u-1", "provider": "google", "account": "u-1@gmail.example"}),
        ("integration.needs_reconnect", {"user_id": "u-1", "provider": "google", "reason": "invalid_grant"}),
        ("integration.disconnected", {"user_id": "u-1", "provider": "google", "reason": "disconnected by support"}),
        ("placement.failed", {"session_id": "sess-42", "user_id": "u-1", "channel": "email",
                              "reason": "550 mailbox unavailable"}),
    ]
    assert {r.status for r in rows(rt)} == {"pending"}


def test_a_failed_placement_is_announced_once_not_on_every_long_backoff_retry(db_url, receiver):
    channel = MemoryChannel()
    rt = runtime_for(db_url, receiver, channel)
    upcoming = {"start": "2030-12-01T15:00:00-05:00", "end": "2030-12-01T16:00:00-05:00"}
    api.upsert_session(session_data(**upcoming), rt=rt, enqueue=False)
    # Given two copies that failed for good, and whose long-backoff retries keep failing
    channel.fail_with = [PermanentError("550 mailbox unavailable")] * 6
    for _ in range(3):
        reconcile_due(rt, "sess-42")
    assert channel.fail_with == []  # every retry did run, and failed
    assert sorted(r.data["user_id"] for r in rows(rt, "placement.failed")) == ["u-1", "u-2"]
    # When a new version re-arms them and they fail again, that is news
    api.upsert_session(session_data(version=2, title="Renamed", **upcoming), rt=rt, enqueue=False)
    channel.fail_with = [PermanentError("550 mailbox unavailable")] * 2
    reconcile_due(rt, "sess-42")
    assert len(rows(rt, "placement.failed")) == 4


def test_a_cause_rolled_back_leaves_no_event(rt):
    iid = connect(rt)
    before = [r.id for r in rows(rt)]
    # When the transaction that killed the grant fails after the move
    with pytest.raises(RuntimeError), rt.store.tx() as db:
        mark_dead(db, iid, "invalid_grant")
        raise RuntimeError("the database went away before the commit")
    # Then neither the move nor its events exist
    assert [r.id for r in rows(rt)] == before
    with rt.store.tx() as db:
        assert db.get(Integration, iid).status == "active"


# -- delivered at least once ------------------------------------------------------------------

def test_every_event_reaches_the_platform_once_per_id_through_a_500_and_a_timeout(db_url, monkeypatch):
    with Receiver(SECRETS, script=[500, "timeout"]) as receiver:
        rt = runtime_for(db_url, receiver)
        with worker(rt, monkeypatch):
            iid = connect(rt)
            kill(rt, iid)
            disconnect(rt, "u-1", reconcile_now=lambda sid: None)
        sent = [r for r in rows(rt) if r.type in events.PLATFORM]
        # Every event was taken exactly once per id, none lost, none rejected
        assert receiver.rejected == []
        assert set(receiver.accepted) == {r.id for r in sent} and len(sent) == 3
        assert all(r.status == "delivered" and r.delivered_at for r in sent)
        # The 500 and the timeout were retried: more requests than events, the timed-out one seen twice
        assert len(receiver.requests) >= len(sent) + 2 and max(receiver.seen.values()) >= 2
        assert sum(r.attempts for r in sent) == 2
        headers, body = receiver.requests[0]
        assert headers["Content-Type"] == "application/json" and headers["User-Agent"].startswith("calsync/")
        event = receiver.accepted[rows(rt, events.NEEDS_RECONNECT)[0].id]
        assert set(event) == {"id", "type", "created", "data"} and event["created"].endswith("Z")
    # The reconnect link in the event is genuine: calsync opens it for the person
    token = event["data"]["connect_url"].rsplit("/", 1)[1]
    assert links.open_link(rt, token).user_id == "u-1"
    assert event["data"]["connect_link_expires_at"].endswith("Z")


def test_a_lost_message_only_delays_the_sweeper_sends_it(rt, receiver, monkeypatch):
    connect(rt)
    webhooks.broker.flush_all()  # the message enqueued after the commit is lost
    [row] = rows(rt)
    # Within the minute the commit's own enqueue has, the sweeper leaves it alone
    assert webhooks.sweep_events(rt) == []
    with rt.store.tx() as db:
        db.execute(update(WebhookEvent).values(created_at=utcnow() - timedelta(minutes=2)))
    with worker(rt, monkeypatch):
        sweep(rt, lambda sid: None)
    assert [e["id"] for e in receiver.accepted.values()] == [row.id]
    assert rows(rt)[0].status == "delivered"
    assert webhooks.sweep_events(rt) == []


def test_without_a_url_nothing_is_sent_and_events_wait(db_url, monkeypatch):
    rt = runtime_for(db_url, None)
    with worker(rt, monkeypatch):
        connect(rt)
    with rt.store.tx() as db:
        db.execute(update(WebhookEvent).values(created_at=utcnow() - timedelta(hours=1)))
    assert webhooks.sweep_events(rt) == []
    assert [(r.status, r.attempts) for r in rows(rt)] == [("pending", 0)]


def test_an_event_the_platform_never_takes_dies_as_a_dead_letter(db_url, monkeypatch):
    with Receiver(SECRETS, script=[500] * 10) as receiver:
        rt = runtime_for(db_url, receiver)
        connect(rt)
        webhooks.broker.flush_all()
        [row] = rows(rt)
        with worker(rt, monkeypatch) as broker:
            webhooks.deliver_webhook.send_with_options(args=(row.id,), max_retries=2)
            broker.join(QUEUE, fail_fast=False, timeout=30_000)
            dead = [m for m in broker.dead_letters if m.actor_name == "deliver_webhook"]
    [row] = rows(rt)
    assert (row.status, row.attempts) == ("dead", 3)
    assert "HTTP 500" in row.last_error and "retries exhausted" in row.last_error
    assert [m.args for m in dead] == [(row.id,)]
    with rt.store.tx() as db:  # long past its next try, a dead event is not sent again
        db.execute(update(WebhookEvent).values(created_at=utcnow() - timedelta(days=2), next_attempt_at=None))
    assert webhooks.sweep_events(rt) == []
    # until an operator retries its dead letter, once the platform is back
    with Receiver(SECRETS) as back:
        rt = runtime_for(db_url, back)
        assert webhooks.deliver(rt, row.id) == "delivered"
    assert list(back.accepted) == [row.id] and rows(rt)[0].status == "delivered"


def test_a_failed_attempt_is_stored_before_the_retry(rt, receiver):
    connect(rt)
    [row] = rows(rt)
    receiver.script = [503]
    with pytest.raises(webhooks.DeliveryFailed):
        webhooks.deliver(rt, row.id)
    [row] = rows(rt)
    assert (row.status, row.attempts, row.last_error) == ("pending", 1, "the platform answered HTTP 503")
    assert row.next_attempt_at > utcnow()
    assert webhooks.deliver(rt, row.id) == "delivered" and webhooks.deliver(rt, row.id) == "skipped"


def test_delivered_and_dead_events_are_deleted_after_30_days(rt):
    kill(rt, connect(rt))
    old = utcnow() - timedelta(days=31)
    with rt.store.tx() as db:
        connected, needs_reconnect = (db.scalars(select(WebhookEvent).where(WebhookEvent.type == t)).one()
                                      for t in (events.CONNECTED, events.NEEDS_RECONNECT))
        connected.status, connected.created_at = "delivered", old
        needs_reconnect.status, needs_reconnect.created_at = "dead", old
        db.add(WebhookEvent(id="recent", type=events.CONNECTED, data={}, status="delivered",
                            created_at=utcnow() - timedelta(days=29)))
        db.add(WebhookEvent(id="old-but-owed", type=events.CONNECTED, data={}, status="pending", created_at=old))
    webhooks.sweep_events(rt)
    assert sorted(r.id for r in rows(rt) if r.type in events.PLATFORM) == ["old-but-owed", "recent"]


# -- the reconnect email ------------------------------------------------------------------------

class Outbox:
    def __init__(self) -> None:
        self.sent: list[tuple[str, EmailMessage]] = []
        self.refuse = 0

    def send(self, message: EmailMessage, *, sender: str, recipient: str) -> None:
        if self.refuse:
            self.refuse -= 1
            raise TransientError("SMTP 451 try again later")
        self.sent.append((recipient, message))

    def close(self) -> None:
        pass


@pytest.fixture
def mail_rt(db_url: str) -> tuple[Runtime, Outbox]:
    outbox = Outbox()
    rt = Runtime(make_settings(db_url, secret_keys=new_key(), reconnect_email=True), Store(db_url),
                 channels=lambda s, st: {"email": EmailChannel(st, outbox, s.mail_from)})
    return rt, outbox


def owed(rt: Runtime) -> list[WebhookEvent]:
    return [r for r in rows(rt, events.RECONNECT_EMAIL) if r.status == "pending"]


def test_one_reconnect_email_a_day_with_a_working_link(mail_rt):
    rt, outbox = mail_rt
    iid = connect(rt)
    with rt.store.tx() as db:
        db.get(Person, "u-1").name = "Ada\r\nBcc: everyone@example.com"
    kill(rt, iid)
    [row] = owed(rt)
    assert reconnect.send_reconnect(rt, row.id) == "sent"
    [(to, message)] = outbox.sent
    assert to == "u-1@gmail.example" and "Bcc" not in message and "\r" not in str(message["To"])
    token = message.get_content().split("/connect/")[1].split()[0]
    assert links.open_link(rt, token).user_id == "u-1"
    # A redelivered message sends nothing more
    assert reconnect.send_reconnect(rt, row.id) == "skipped" and len(outbox.sent) == 1
    # Reconnected and dead again the same day: the second email waits for the day to pass
    connect(rt)
    kill(rt, iid)
    [again] = owed(rt)
    assert reconnect.send_reconnect(rt, again.id) == "later" and len(outbox.sent) == 1
    [again] = owed(rt)
    assert again.next_attempt_at > utcnow() + timedelta(hours=23)


def test_a_refused_reconnect_email_gives_the_day_back_and_is_retried(mail_rt):
    rt, outbox = mail_rt
    iid = connect(rt)
    kill(rt, iid)
    [row] = owed(rt)
    outbox.refuse = 1
    with pytest.raises(TransientError):
        reconnect.send_reconnect(rt, row.id)
    with rt.store.tx() as db:
        assert db.get(Integration, iid).reconnect_mailed_at is None
    [row] = owed(rt)
    assert row.attempts == 1 and "451" in row.last_error
    assert reconnect.send_reconnect(rt, row.id) == "sent" and len(outbox.sent) == 1


def test_no_reconnect_email_when_it_is_off_or_the_person_reconnected(db_url, mail_rt):
    rt, outbox = mail_rt
    iid = connect(rt)
    kill(rt, iid)
    connect(rt)  # reconnected before the email went out
    [row] = owed(rt)
    assert reconnect.send_reconnect(rt, row.id) == "skipped" and outbox.sent == []
    off = runtime_for(db_url, None, reconnect_email=False)
    kill(off, iid)
    webhooks.sweep_events(off)
    assert owed(off) == [] and rows(off, events.RECONNECT_EMAIL)[-1].last_error.endswith("is off")
