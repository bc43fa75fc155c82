"""Placement rows: reading them for the planner, leasing them, and every state change.

Every write of ``state`` in calsync happens here, through :func:`_move`, which
checks the move against the lifecycle in :mod:`sync.core.states`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session as Db
from sqlalchemy.orm import object_session

from sync.core import states
from sync.core.plan import Action, Kind, Recorded
from sync.core.render import Recipient, RenderedEvent
from sync.core.states import State
from sync.store import webhooks
from sync.store.db import utcnow
from sync.store.models import Placement

#: The columns the planner reads, in the order :func:`recorded_from` takes them.
PLANNED_COLUMNS = ("id", "user_id", "channel", "recipient_email", "recipient_name", "recipient_timezone", "live",
                   "state", "sequence", "content_hash", "material_hash", "external_id", "last_error", "revision",
                   "attempt_revision", "next_attempt_at", "address")


def recorded_from(values: Sequence[Any]) -> Recorded:
    """A Recorded from PLANNED_COLUMNS values, positionally: bulk planning reads plain
    tuples, where looking columns up by name would cost more than the planning."""
    (pid, user_id, channel, email, name, tz, live, state, sequence, content_hash, material_hash, external_id,
     last_error, revision, attempt_revision, next_attempt_at, address) = values
    return Recorded(pid, user_id, channel, Recipient(user_id, email, name, tz or "UTC"), live, state, sequence,
                    content_hash, material_hash, external_id, last_error, revision, attempt_revision,
                    next_attempt_at, address)


def recorded(row: Placement) -> Recorded:
    return recorded_from([getattr(row, c) for c in PLANNED_COLUMNS])


def for_session(db: Db, session_id: str) -> list[Placement]:
    return list(db.scalars(select(Placement).where(Placement.session_id == session_id).order_by(Placement.id)))


def ensure(db: Db, session_id: str, action: Action) -> Placement:
    """The row for (session, person, channel, address), created pending if new.

    Two workers may create it at once; the loser's insert hits the unique
    constraint inside a savepoint and it reads the winner's row instead.
    """
    query = select(Placement).where(Placement.session_id == session_id, Placement.user_id == action.user_id,
                                    Placement.channel == action.channel, Placement.address == action.address)
    row = db.scalars(query).one_or_none()
    if row is not None:
        return row
    r = action.event.recipient
    row = Placement(session_id=session_id, user_id=action.user_id, channel=action.channel, address=action.address,
                    recipient_email=r.email, recipient_name=r.name, recipient_timezone=r.timezone,
                    uid=action.event.uid, sequence=action.sequence, live=False, state=State.PENDING, attempts=0)
    try:
        with db.begin_nested():
            db.add(row)
    except IntegrityError:
        return db.scalars(query).one()
    return row


class Restorable(Protocol):
    """The parts of a row an attempt that applied nothing gives back."""

    live: bool
    in_doubt: bool
    sequence: int


def claim(db: Db, placement_id: int, token: str, lease: timedelta) -> bool:
    """Compare-and-set the lease for one reconcile run: True only for the one run that got it.

    ``token`` is unique to the run (not to the process), so two threads of one
    worker taking the same session cannot both win.
    """
    now = utcnow()
    result = db.execute(
        update(Placement)
        .where(Placement.id == placement_id, or_(Placement.lease_owner.is_(None), Placement.lease_until < now))
        .values(lease_owner=token, lease_until=now + lease)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def release(db: Db, placement_id: int, token: str) -> None:
    db.execute(
        update(Placement).where(Placement.id == placement_id, Placement.lease_owner == token)
        .values(lease_owner=None, lease_until=None).execution_options(synchronize_session=False)
    )


class LeaseLost(Exception):
    """Our lease expired and another run took the placement: its outcome is theirs to record."""


def held(db: Db, placement_id: int, token: str) -> Placement:
    """The row, locked, if ``token`` still holds its lease.

    Raises:
      LeaseLost: another run holds it now; this run must not write.
    """
    row = db.scalars(select(Placement).where(Placement.id == placement_id).with_for_update()).one_or_none()
    if row is None or row.lease_owner != token:
        raise LeaseLost(f"placement {placement_id} is no longer leased to this run")
    return row


def _move(row: Placement, to: State) -> None:
    row.state = states.check(row.state, to)


def mark_sending(row: Placement, action: Action, revision: int) -> None:
    """Written before the channel is called: from here on a copy may exist out there,
    and this SEQUENCE may have been used, whatever happens to this worker next.

    An attempt for a newer revision than the last one is new intent: the
    attempt counter starts again, so a copy that failed gets its full retries.
    """
    if revision > row.attempt_revision:
        row.attempts = 0
    row.attempt_revision = max(row.attempt_revision, revision)
    row.sequence = max(row.sequence, action.sequence)
    _move(row, State.SENDING)
    if action.kind is not Kind.WITHDRAW:
        row.live = True
    row.in_doubt = True


def record_success(row: Placement, action: Action, revision: int, external_id: str | None,
                   generation: int | None = None) -> None:
    ev: RenderedEvent = action.event
    row.sequence = max(row.sequence, action.sequence)
    row.revision = revision
    row.attempts = 0
    row.last_error = None
    row.next_attempt_at = None
    row.in_doubt = False
    if generation is not None:
        row.generation = max(row.generation, generation)
    if action.kind is Kind.WITHDRAW:
        # The next copy is a new one: fresh provider ids, never the deleted event's.
        row.live, row.external_id = False, None
        row.generation += 1
        _move(row, State.WITHDRAWN)
        row.content_hash = row.material_hash = None
    else:
        row.external_id = external_id if external_id is not None else row.external_id
        row.live = True
        _move(row, State.PLACED)
        row.content_hash, row.material_hash = ev.content_hash, ev.material_hash
        r = ev.recipient
        row.recipient_email, row.recipient_name, row.recipient_timezone = r.email, r.name, r.timezone


def record_failure(row: Placement, error: str, to: State, *, retry_at: datetime | None,
                   before: Restorable | None = None, spend: bool = True, announce: bool = True) -> None:
    """A failed attempt. ``before`` is what the row said before the attempt, restored
    when the far side is known to have applied nothing (a refusal, a throttle, our
    own configuration): the copy is exactly as live, as certain and as far along
    in SEQUENCE as it was. ``announce`` is False for the long-backoff retry of a copy
    that had already failed: the platform hears of a failure once, not hourly."""
    if spend:
        row.attempts += 1
    row.last_error = error
    _move(row, to)
    if to == State.FAILED and announce:
        db = object_session(row)
        assert db is not None, "a placement fails only inside a transaction (its event is written with it)"
        webhooks.record(db, webhooks.PLACEMENT_FAILED, {"session_id": row.session_id, "user_id": row.user_id,
                                                        "channel": row.channel, "reason": error})
    row.next_attempt_at = retry_at
    if before is not None:
        row.live, row.in_doubt, row.sequence = before.live, before.in_doubt, before.sequence


def strand(row: Placement, error: str, *, was_live: bool, was_in_doubt: bool) -> None:
    """The person's credentials died: a copy that may be there waits for a reconnect;
    if none can be, there is nothing to wait for."""
    row.last_error = error
    row.next_attempt_at = None
    if was_live or was_in_doubt:
        row.live = True
        _move(row, State.STRANDED)
    else:
        row.live = False
        _move(row, State.WITHDRAWN)


def drifted(row: Placement, error: str, *, gone: bool = True) -> None:
    """The copy differs from what calsync placed: edited (hashes forgotten, so the next
    plan rewrites it) or deleted by the person (not live, so the next plan places a new one)."""
    row.last_error, row.next_attempt_at = error, None
    row.content_hash = row.material_hash = None
    if gone:
        row.live, row.external_id, row.in_doubt = False, None, False
        row.generation += 1
    _move(row, State.DRIFT)


def settle(row: Placement, reason: str) -> None:
    """A copy nobody wants any more that never reached anyone: nothing to withdraw."""
    row.live, row.next_attempt_at, row.last_error = False, None, reason
    _move(row, State.WITHDRAWN)
