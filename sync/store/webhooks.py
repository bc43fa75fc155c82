"""Events for the platform (and the reconnect emails calsync owes), written with their cause.

:func:`record` adds a row in the caller's transaction, so an event exists exactly
when its cause was committed: a cause rolled back leaves no event, and a
committed one cannot lose its event to a lost message. Delivery
(:mod:`sync.engine.webhooks`) reads the row; the sweeper re-enqueues every row
still owed. After a commit that recorded events, the callbacks registered with
:func:`on_commit` are told (the engine enqueues them at once); a lost callback
only delays.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session as Db

from sync.store.db import utcnow
from sync.store.models import WebhookEvent

log = logging.getLogger(__name__)

CONNECTED = "integration.connected"
NEEDS_RECONNECT = "integration.needs_reconnect"
DISCONNECTED = "integration.disconnected"
PLACEMENT_FAILED = "placement.failed"
#: The events the platform receives.
PLATFORM = (CONNECTED, NEEDS_RECONNECT, DISCONNECTED, PLACEMENT_FAILED)
#: Not for the platform: a reconnect email owed to a person (``CALSYNC_RECONNECT_EMAIL``).
RECONNECT_EMAIL = "calsync.reconnect_email"

PENDING, DELIVERED, DEAD = "pending", "delivered", "dead"

#: ``(id, type)`` of each event a transaction recorded, for whoever enqueues them after its commit.
Committed = Callable[[list[tuple[str, str]]], None]
_callbacks: list[Committed] = []
_KEY = "calsync_webhook_events"


def record(db: Db, type: str, data: dict[str, Any]) -> str:
    """Add an event in ``db``'s transaction; returns its id."""
    event_id = str(uuid.uuid4())
    db.add(WebhookEvent(id=event_id, type=type, data=data, status=PENDING, attempts=0, created_at=utcnow()))
    recorded = db.info.get(_KEY)
    if recorded is None:
        recorded = db.info[_KEY] = []
        sa_event.listen(db, "after_commit", _committed)
        sa_event.listen(db, "after_rollback", _forget)
    recorded.append((event_id, type))
    return event_id


def on_commit(callback: Committed) -> None:
    """Call ``callback`` with the events of every transaction that recorded some, after it commits."""
    if callback not in _callbacks:
        _callbacks.append(callback)


def _committed(db: Db) -> None:
    events = db.info.pop(_KEY, None) or []
    for callback in list(_callbacks) if events else []:
        try:
            callback(events)
        except Exception as exc:  # the commit stands; the sweeper sends what this could not
            log.warning("could not enqueue %d webhook event(s) (%s); the sweeper will", len(events),
                        type(exc).__name__)


def _forget(db: Db) -> None:
    db.info.pop(_KEY, None)


def claim_due(db: Db, types: Iterable[str], *, now: datetime, grace: timedelta, lease: timedelta) -> list[
        tuple[str, str]]:
    """``(id, type)`` of every pending event of ``types`` that is owed a try now, pushed ``lease`` ahead.

    Due: its next try's time has passed, or it never had a try and is older
    than ``grace`` (the enqueue after its commit had that long). Pushing it
    ahead keeps a slow queue from collecting one message per sweep.
    """
    types = list(types)
    if not types:
        return []
    rows = list(db.execute(
        select(WebhookEvent.id, WebhookEvent.type)
        .where(WebhookEvent.status == PENDING, WebhookEvent.type.in_(types),
               or_(WebhookEvent.next_attempt_at <= now,
                   WebhookEvent.next_attempt_at.is_(None) & (WebhookEvent.created_at <= now - grace)))
        .order_by(WebhookEvent.created_at)))
    if rows:
        db.execute(update(WebhookEvent).where(WebhookEvent.id.in_([r[0] for r in rows]))
                   .values(next_attempt_at=now + lease).execution_options(synchronize_session=False))
    return [(r[0], r[1]) for r in rows]


def settle_all(db: Db, type: str, reason: str) -> int:
    """Mark every pending event of ``type`` dead with ``reason`` (nothing will send them)."""
    result = db.execute(update(WebhookEvent).where(WebhookEvent.status == PENDING, WebhookEvent.type == type)
                        .values(status=DEAD, last_error=reason, next_attempt_at=None)
                        .execution_options(synchronize_session=False))
    return int(result.rowcount or 0)


def purge(db: Db, before: datetime) -> int:
    """Delete delivered and dead events created before ``before``; returns how many."""
    result = db.execute(delete(WebhookEvent).where(WebhookEvent.status.in_((DELIVERED, DEAD)),
                                                   WebhookEvent.created_at < before)
                        .execution_options(synchronize_session=False))
    return int(result.rowcount or 0)


def delivered(row: WebhookEvent, note: str | None = None) -> None:
    row.status, row.delivered_at, row.next_attempt_at, row.last_error = DELIVERED, utcnow(), None, note


def failed(row: WebhookEvent, error: str, next_attempt_at: datetime | None) -> None:
    row.attempts += 1
    row.last_error, row.next_attempt_at = error, next_attempt_at


def dead(row: WebhookEvent, reason: str) -> None:
    row.status, row.next_attempt_at, row.last_error = DEAD, None, reason
