"""The email channel: iMIP invites for everyone without a connected calendar.

Each send attempt is claimed in the outbox before it goes out and marked sent
right after, in its own commit. The outbox key is the attempt — placement,
session revision, SEQUENCE, METHOD — so a message redelivered after the SMTP
server took the invite finds it sent and does not mail it again, while an edit
reverted to earlier content is a new revision and is mailed. Only a crash in
the few milliseconds between the server's 250 and that commit can resend, and
a resend is the same message (UID, SEQUENCE, DTSTAMP), which calendars treat
as the same invite. DTSTAMP rises strictly per placement, so a receiver can
always order two updates that share a SEQUENCE.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session as Db

from sync.core.render import RenderedEvent
from sync.errors import TransientError
from sync.mail.imip import build_invite
from sync.mail.transport import Transport
from sync.providers.channel import Receipt, Target
from sync.store.db import Store, utcnow
from sync.store.models import OutboxRow


class EmailChannel:
    name = "email"

    def __init__(self, store: Store, transport: Transport, organizer: str) -> None:
        self.store = store
        self.transport = transport
        self.organizer = organizer

    def place(self, target: Target, event: RenderedEvent) -> Receipt:
        return self._deliver(target, event, "REQUEST")

    def withdraw(self, target: Target, event: RenderedEvent) -> Receipt:
        return self._deliver(target, event, "CANCEL")

    def _deliver(self, target: Target, event: RenderedEvent, method: str) -> Receipt:
        recipient = event.recipient.email
        with self.store.tx() as db:
            row = db.scalars(select(OutboxRow).where(
                OutboxRow.placement_id == target.placement_id, OutboxRow.revision == target.revision,
                OutboxRow.sequence == target.sequence, OutboxRow.method == method,
            ).with_for_update()).one_or_none()
            if row is not None and row.state == "sent":
                return Receipt(external_id=event.uid, detail=f"{method} seq {target.sequence} already sent")
            if row is None:
                row = OutboxRow(placement_id=target.placement_id, uid=event.uid, revision=target.revision,
                                sequence=target.sequence, method=method, content_hash=event.content_hash,
                                recipient=recipient, dtstamp=_next_dtstamp(db, target.placement_id))
                try:
                    with db.begin_nested():
                        db.add(row)
                except IntegrityError:
                    # Another run claimed this very attempt a moment ago (its lease had run out
                    # under us): the attempt is theirs; report it as in flight, not as a crash.
                    raise TransientError(f"{method} seq {target.sequence} is being sent by another worker") from None
            # A claimed row whose send may or may not have happened goes out again
            # exactly as before (same DTSTAMP): a calendar treats it as the same message.
            outbox_id, dtstamp = row.id, row.dtstamp or _next_dtstamp(db, target.placement_id)
        message = build_invite(event, method=method, sequence=target.sequence, organizer=self.organizer,
                               dtstamp=dtstamp, update=target.maybe_exists)
        self.transport.send(message, sender=self.organizer, recipient=recipient)
        with self.store.tx() as db:
            sent = db.get(OutboxRow, outbox_id)
            assert sent is not None
            sent.state, sent.sent_at, sent.message_id = "sent", utcnow(), str(message["Message-ID"])
        return Receipt(external_id=event.uid, detail=f"{method} seq {target.sequence} sent")


def _next_dtstamp(db: Db, placement_id: int) -> datetime:
    """Now, to the second (iCalendar's resolution), but always after this placement's last
    DTSTAMP: two updates with one SEQUENCE in one second must still be ordered (RFC 5546 §2.1.5)."""
    now = utcnow().replace(microsecond=0)
    last = db.scalar(select(func.max(OutboxRow.dtstamp)).where(OutboxRow.placement_id == placement_id))
    return now if last is None or last < now else last + timedelta(seconds=1)
