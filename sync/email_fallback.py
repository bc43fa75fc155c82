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

from sync.core.render import RenderedEvent
from sync.errors import TransientError
from sync.mail.imip import build_invite
from sync.mail.transport import Transport
from sync.providers.channel import Receipt, Target
from sync.store import outbox
from sync.store.db import Store


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
            try:
                row = outbox.claim(db, placement_id=target.placement_id, uid=event.uid, revision=target.revision,
                                   sequence=target.sequence, method=method, content_hash=event.content_hash,
                                   recipient=recipient)
            except outbox.ClaimedElsewhere:
                # The attempt is another run's: report it as in flight, not as a crash.
                raise TransientError(f"{method} seq {target.sequence} is being sent by another worker") from None
            if row.state == "sent":
                return Receipt(external_id=event.uid, detail=f"{method} seq {target.sequence} already sent")
            outbox_id, dtstamp = row.id, row.dtstamp
        message = build_invite(event, method=method, sequence=target.sequence, organizer=self.organizer,
                               dtstamp=dtstamp, update=target.maybe_exists)
        self.transport.send(message, sender=self.organizer, recipient=recipient)
        with self.store.tx() as db:
            outbox.mark_sent(db, outbox_id, str(message["Message-ID"]))
        return Receipt(external_id=event.uid, detail=f"{method} seq {target.sequence} sent")
