"""The email channel: iMIP invites for everyone without a connected calendar.

Each send is claimed in the outbox before it goes out and marked sent right
after, in its own commit. So a message redelivered after the SMTP server took
the invite finds it sent and does not mail it again; only a crash in the few
milliseconds between the server's 250 and that commit can resend, and a resend
carries the same UID and SEQUENCE, which calendars treat as the same invite.
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import select

from sync.channels import Receipt, Target
from sync.imip import build_invite
from sync.mail_transport import Transport
from sync.render import RenderedEvent
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
                OutboxRow.placement_id == target.placement_id, OutboxRow.sequence == target.sequence,
                OutboxRow.method == method, OutboxRow.content_hash == event.content_hash,
            )).one_or_none()
            if row is not None and row.state == "sent":
                return Receipt(external_id=event.uid, detail=f"{method} seq {target.sequence} already sent")
            if row is None:
                row = OutboxRow(placement_id=target.placement_id, uid=event.uid, sequence=target.sequence,
                                method=method, content_hash=event.content_hash, recipient=recipient)
                db.add(row)
                db.flush()
            outbox_id = row.id
        message = build_invite(event, method=method, sequence=target.sequence, organizer=self.organizer,
                               dtstamp=datetime.now(timezone.utc))
        self.transport.send(message, sender=self.organizer, recipient=recipient)
        with self.store.tx() as db:
            sent = db.get(OutboxRow, outbox_id)
            assert sent is not None
            sent.state, sent.sent_at, sent.message_id = "sent", utcnow(), str(message["Message-ID"])
        return Receipt(external_id=event.uid, detail=f"{method} seq {target.sequence} sent")
