"""Signed webhooks to the platform, delivered at least once.

Each event is a row (:mod:`sync.store.webhooks`) written with its cause. A
message only wakes delivery: ``deliver_webhook(event_id)`` POSTs the row's body
to ``CALSYNC_WEBHOOK_URL``, signed with every ``CALSYNC_WEBHOOK_SECRETS`` entry;
a 2xx marks it delivered, anything else is stored on the row and raised, so
Dramatiq retries with backoff for more than a day and then parks the message as
a dead letter, and the row is marked dead. The sweeper (:func:`sweep_events`)
enqueues whatever is still owed, so a lost message only delays. A receiver may
see an event twice (it was delivered but the answer was lost): it dedupes by id.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from importlib.metadata import version
from typing import Any

import dramatiq
import requests

from sync.engine import metrics
from sync.engine.broker import QUEUE, get_broker
from sync.engine.runtime import Runtime, get_runtime
from sync.store import connect_links
from sync.store import webhooks as events
from sync.store.db import utcnow
from sync.store.models import WebhookEvent

log = logging.getLogger(__name__)

HEADER = "Calsync-Signature"
#: Delivery retries: the delay doubles from 10 s up to 1 h. Dramatiq's backoff for
#: retry r (r = 0, 1, ...) is 10 s * 2**r times a jitter in [1, 2], or, once that
#: passes the cap, 1 h times a jitter in [0.5, 1]. So retry r waits at least
#: min(10 s * 2**r, 30 min): r = 0..7 wait >= 10+20+...+1280 = 2550 s, and each later
#: retry >= 1800 s. 55 retries wait >= 2550 + 47 * 1800 = 87150 s > 24 h (86400 s).
MIN_BACKOFF_MS = 10_000
MAX_BACKOFF_MS = 3_600_000
MAX_RETRIES = 55
#: How long a never-tried event waits for the enqueue after its commit before the sweeper sends it.
SWEEP_GRACE = timedelta(minutes=1)
#: How far the sweeper pushes an event it enqueued, so a slow queue does not collect one message per sweep.
SWEEP_LEASE = timedelta(minutes=10)
#: Delivered and dead events are kept this long, then deleted.
RETENTION = timedelta(days=30)


def min_retry_span_ms(retries: int = MAX_RETRIES, min_ms: int = MIN_BACKOFF_MS, max_ms: int = MAX_BACKOFF_MS) -> int:
    """The shortest time ``retries`` Dramatiq retries can take, whatever the jitter draws."""
    return sum(min(min_ms * 2 ** r, max_ms // 2) for r in range(retries))


def body_of(row: WebhookEvent) -> bytes:
    created = row.created_at.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    return json.dumps({"id": row.id, "type": row.type, "created": created, "data": row.data},
                      separators=(",", ":"), ensure_ascii=False).encode()


def signature(secrets: Sequence[str], body: bytes, timestamp: int) -> str:
    """``t=<unix seconds>,v1=<hex>[,v1=<hex>...]``: one HMAC-SHA256 of ``"<t>.<body>"`` per secret, in order."""
    signed = f"{timestamp}.".encode() + body
    macs = [hmac.new(s.encode(), signed, hashlib.sha256).hexdigest() for s in secrets]
    return ",".join([f"t={timestamp}", *(f"v1={m}" for m in macs)])


class DeliveryFailed(Exception):
    """The platform did not take the event (a non-2xx, a timeout, a refused connection): retry later."""


Post = Callable[..., Any]


def deliver(rt: Runtime, event_id: str, post: Post = requests.post) -> str:
    """Send one event; returns ``delivered``, ``skipped`` (delivered already, unknown, or no URL set).

    Raises:
      DeliveryFailed: the attempt failed; it is stored on the row first.
    """
    s = rt.settings
    if s.webhook_url is None:
        return "skipped"  # nothing is sent; the rows wait, pending, for a URL
    with rt.store.tx() as db:
        row = db.get(WebhookEvent, event_id)
        # A dead event is sent again only when its dead letter is retried (the sweeper leaves it).
        if row is None or row.status == events.DELIVERED or row.type not in events.PLATFORM:
            return "skipped"
        if row.type == events.NEEDS_RECONNECT and "connect_url" not in row.data:
            # Made once, at the first try, and kept on the row: every retry sends the same body.
            keys = connect_links.signing_keys(k.get_secret_value() for k in s.require("secret_keys"))
            url, expires, _ = connect_links.create(
                db, user_id=row.data["user_id"], provider=row.data.get("provider"), return_to=None, keys=keys,
                base_url=s.base_url, ttl=timedelta(seconds=s.connect_link_ttl_seconds))
            row.data = {**row.data, "connect_url": url, "connect_link_expires_at": _iso(expires)}
        body = body_of(row)
    secrets = [k.get_secret_value() for k in s.webhook_secrets]
    error = None
    if not secrets:
        error = "CALSYNC_WEBHOOK_SECRETS is empty: events are not sent unsigned"
    else:
        headers = {HEADER: signature(secrets, body, int(time.time())), "Content-Type": "application/json",
                   "User-Agent": f"calsync/{version('calsync')}"}
        try:
            response = post(str(s.webhook_url), data=body, headers=headers, timeout=s.io_timeout_seconds,
                            allow_redirects=False)
            if not 200 <= response.status_code < 300:
                error = f"the platform answered HTTP {response.status_code}"
        except requests.RequestException as exc:
            # Only the type: requests' message quotes the URL, which may carry a token.
            error = f"no answer from the platform ({type(exc).__name__})"
    with rt.store.tx() as db:
        row = db.get(WebhookEvent, event_id)
        if row is None or row.status == events.DELIVERED:
            return "skipped"
        if error is None:
            events.delivered(row)
            metrics.WEBHOOK_DELIVERIES.labels(outcome="delivered").inc()
            return "delivered"
        events.failed(row, error, utcnow() + _next_try_bound(row.attempts + 1))
    metrics.WEBHOOK_DELIVERIES.labels(outcome="failed").inc()
    log.warning("webhook %s (%s) not delivered: %s", event_id, row.type, error)
    raise DeliveryFailed(error)


def _next_try_bound(attempts: int) -> timedelta:
    """When the next retry has surely run, if its message was not lost (then the sweeper sends it)."""
    upper = min(MIN_BACKOFF_MS * 2 ** min(attempts - 1, 32) * 2, MAX_BACKOFF_MS)
    return timedelta(milliseconds=upper) + SWEEP_LEASE


def _iso(at: datetime) -> str:
    return at.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def gave_up(rt: Runtime, event_id: str) -> None:
    """Dramatiq spent every retry: the event is dead, so the sweeper stops sending it."""
    with rt.store.tx() as db:
        row = db.get(WebhookEvent, event_id)
        if row is not None and row.status == events.PENDING:
            events.dead(row, f"retries exhausted; last error: {row.last_error}")
            log.error("webhook %s (%s) is dead after %d attempts: %s", event_id, row.type, row.attempts,
                      row.last_error)


def sweep_events(rt: Runtime, now: datetime | None = None) -> list[str]:
    """Enqueue every event owed a try, and delete delivered and dead ones past retention.

    Nothing is enqueued for the platform while ``CALSYNC_WEBHOOK_URL`` is unset
    (its events stay pending); reconnect emails owed while
    ``CALSYNC_RECONNECT_EMAIL`` is off are settled as not sent. Returns the ids enqueued.
    """
    s = rt.settings
    now = now or utcnow()
    types = [*(events.PLATFORM if s.webhook_url is not None else ()),
             *((events.RECONNECT_EMAIL,) if s.reconnect_email else ())]
    with rt.store.tx() as db:
        events.purge(db, now - RETENTION)
        if not s.reconnect_email:
            events.settle_all(db, events.RECONNECT_EMAIL, "not sent: CALSYNC_RECONNECT_EMAIL is off")
        due = events.claim_due(db, types, now=now, grace=SWEEP_GRACE, lease=SWEEP_LEASE)
    send(due)
    return [event_id for event_id, _ in due]


broker = get_broker()


@dramatiq.actor(broker=broker, queue_name=QUEUE, max_retries=0)
def webhook_gave_up(message: dict[str, Any], _info: dict[str, Any]) -> None:
    gave_up(get_runtime(), message["args"][0])


@dramatiq.actor(broker=broker, queue_name=QUEUE, max_retries=MAX_RETRIES, min_backoff=MIN_BACKOFF_MS,
                max_backoff=MAX_BACKOFF_MS, on_retry_exhausted=webhook_gave_up.actor_name)
def deliver_webhook(event_id: str) -> None:
    deliver(get_runtime(), event_id)


def send(recorded: list[tuple[str, str]]) -> None:
    """Enqueue each ``(id, type)``: its delivery, or its reconnect email."""
    for event_id, type in recorded:
        (reconnect.send_reconnect_email if type == events.RECONNECT_EMAIL else deliver_webhook).send(event_id)


# Every commit that records an event enqueues it at once; the sweeper covers a failure here.
events.on_commit(send)

# The reconnect email rides the same rows and sweep: importing it here declares its actor
# in every process that has this one's (it imports the names above, which exist by now).
from sync.engine import reconnect  # noqa: E402
