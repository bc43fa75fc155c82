"""The outbox: one row per send attempt of an emailed invite, so a redelivered message is not mailed twice.

An attempt is keyed by (placement, session revision, SEQUENCE, METHOD) and
claimed before the send; the row is marked sent right after. A claimed row
whose send may or may not have happened goes out again exactly as before (same
DTSTAMP), which a calendar treats as the same message.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session as Db

from sync.store.db import utcnow
from sync.store.models import OutboxRow


class ClaimedElsewhere(Exception):
    """Another run claimed this very attempt a moment ago (its lease ran out under ours)."""


def claim(db: Db, *, placement_id: int, uid: str, revision: int, sequence: int, method: str, content_hash: str,
          recipient: str) -> OutboxRow:
    """This attempt's row, locked: the existing one (maybe already ``sent``), or a new claim.

    Raises:
      ClaimedElsewhere: a concurrent run inserted the same attempt first.
    """
    row = db.scalars(select(OutboxRow).where(
        OutboxRow.placement_id == placement_id, OutboxRow.revision == revision,
        OutboxRow.sequence == sequence, OutboxRow.method == method,
    ).with_for_update()).one_or_none()
    if row is not None:
        if row.dtstamp is None:
            row.dtstamp = next_dtstamp(db, placement_id)
        return row
    row = OutboxRow(placement_id=placement_id, uid=uid, revision=revision, sequence=sequence, method=method,
                    content_hash=content_hash, recipient=recipient, dtstamp=next_dtstamp(db, placement_id))
    try:
        with db.begin_nested():
            db.add(row)
    except IntegrityError:
        raise ClaimedElsewhere(f"{method} seq {sequence}") from None
    return row


def mark_sent(db: Db, outbox_id: int, message_id: str) -> None:
    sent = db.get(OutboxRow, outbox_id)
    assert sent is not None
    sent.state, sent.sent_at, sent.message_id = "sent", utcnow(), message_id


def next_dtstamp(db: Db, placement_id: int) -> datetime:
    """Now, to the second (iCalendar's resolution), but always after this placement's last
    DTSTAMP: two updates with one SEQUENCE in one second must still be ordered (RFC 5546 §2.1.5)."""
    now = utcnow().replace(microsecond=0)
    last = db.scalar(select(func.max(OutboxRow.dtstamp)).where(OutboxRow.placement_id == placement_id))
    return now if last is None or last < now else last + timedelta(seconds=1)


def last_for(db: Db, placement_id: int) -> OutboxRow | None:
    """The placement's latest send attempt, for diagnosing what its person last received."""
    return db.scalars(select(OutboxRow).where(OutboxRow.placement_id == placement_id)
                      .order_by(OutboxRow.id.desc()).limit(1)).one_or_none()
