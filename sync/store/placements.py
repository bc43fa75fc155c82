"""Placement rows: reading them for the planner, leasing them, recording outcomes."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session as Db

from sync.plan import Action, Kind, Recorded
from sync.render import Recipient, RenderedEvent
from sync.store.db import utcnow
from sync.store.models import Placement, SyncLog

#: The columns the planner reads, in the order :func:`recorded_from` takes them.
PLANNED_COLUMNS = ("id", "user_id", "channel", "recipient_email", "recipient_name", "recipient_timezone", "live",
                   "state", "sequence", "content_hash", "material_hash", "external_id", "last_error", "revision")


def recorded_from(values: Sequence[Any]) -> Recorded:
    """A Recorded from PLANNED_COLUMNS values, positionally: bulk planning reads plain
    tuples, where looking columns up by name would cost more than the planning."""
    (pid, user_id, channel, email, name, tz, live, state, sequence, content_hash, material_hash, external_id,
     last_error, revision) = values
    return Recorded(pid, user_id, channel, Recipient(user_id, email, name, tz or "UTC"), live, state, sequence,
                    content_hash, material_hash, external_id, last_error, revision)


def recorded(row: Placement) -> Recorded:
    return recorded_from([getattr(row, c) for c in PLANNED_COLUMNS])


def for_session(db: Db, session_id: str) -> list[Placement]:
    return list(db.scalars(select(Placement).where(Placement.session_id == session_id).order_by(Placement.id)))


def ensure(db: Db, session_id: str, action: Action) -> Placement:
    """The row for (session, person, channel), created pending if new.

    Two workers may create it at once; the loser's insert hits the unique
    constraint inside a savepoint and it reads the winner's row instead.
    """
    query = select(Placement).where(Placement.session_id == session_id, Placement.user_id == action.user_id,
                                    Placement.channel == action.channel)
    row = db.scalars(query).one_or_none()
    if row is not None:
        return row
    r = action.event.recipient
    row = Placement(session_id=session_id, user_id=action.user_id, channel=action.channel,
                    recipient_email=r.email, recipient_name=r.name, recipient_timezone=r.timezone,
                    uid=action.event.uid, sequence=0, live=False, state="pending", attempts=0)
    try:
        with db.begin_nested():
            db.add(row)
    except IntegrityError:
        return db.scalars(query).one()
    return row


def claim(db: Db, placement_id: int, owner: str, lease: timedelta) -> bool:
    """Compare-and-set the lease: True only for the one worker that got it."""
    now = utcnow()
    result = db.execute(
        update(Placement)
        .where(Placement.id == placement_id,
               or_(Placement.lease_owner.is_(None), Placement.lease_owner == owner, Placement.lease_until < now))
        .values(lease_owner=owner, lease_until=now + lease)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def release(db: Db, placement_id: int, owner: str) -> None:
    db.execute(
        update(Placement).where(Placement.id == placement_id, Placement.lease_owner == owner)
        .values(lease_owner=None, lease_until=None).execution_options(synchronize_session=False)
    )


def mark_sending(db: Db, row: Placement, action: Action) -> None:
    """Written before the channel is called: from here on a copy may exist out there,
    and this SEQUENCE may have been used, whatever happens to this worker next."""
    row.sequence = max(row.sequence, action.sequence)
    row.state = "sending"
    if action.kind is not Kind.WITHDRAW:
        row.live = True


def record_success(db: Db, row: Placement, action: Action, revision: int, external_id: str | None) -> None:
    ev: RenderedEvent = action.event
    row.sequence = action.sequence
    row.external_id = external_id if external_id is not None else row.external_id
    row.revision = revision
    row.attempts = 0
    row.last_error = None
    row.next_attempt_at = None
    if action.kind is Kind.WITHDRAW:
        row.live, row.state = False, "withdrawn"
        row.content_hash = row.material_hash = None
    else:
        row.live, row.state = True, "placed"
        row.content_hash, row.material_hash = ev.content_hash, ev.material_hash
        r = ev.recipient
        row.recipient_email, row.recipient_name, row.recipient_timezone = r.email, r.name, r.timezone


def record_failure(db: Db, row: Placement, error: str, *, final: bool, retry_at: datetime | None) -> None:
    row.attempts += 1
    row.last_error = error
    row.state = "failed" if final else "retrying"
    row.next_attempt_at = None if final else retry_at


def log(db: Db, session_id: str, action: Action | None, result: str, *, user_id: str | None = None,
        channel: str | None = None, **detail: object) -> None:
    db.add(SyncLog(
        session_id=session_id,
        user_id=action.user_id if action else user_id,
        channel=action.channel if action else channel,
        action=action.kind.value if action else result,
        result=result,
        detail={k: v for k, v in detail.items() if v is not None} or None,
    ))
