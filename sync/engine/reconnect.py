"""The optional reconnect email (``CALSYNC_RECONNECT_EMAIL=true``).

When an integration goes ``needs_reconnect``, :func:`sync.store.integrations.move`
records a ``calsync.reconnect_email`` row with the change. This sends that one
plain email, with a fresh connect link, at most once a day per person
(``Integration.reconnect_mailed_at``): an email owed sooner waits for the day to
pass, and one whose integration was reconnected or disconnected meanwhile is not
sent. The day is claimed before the email goes out, so a worker that dies after
sending cannot send it twice; a refused send gives the day back and is retried.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import formataddr, make_msgid

import dramatiq
from sqlalchemy import func, select

from sync.core.sanitize import header_safe
from sync.core.states import Link
from sync.email_fallback import EmailChannel
from sync.engine.broker import QUEUE
from sync.engine.runtime import Runtime, get_runtime
from sync.engine.webhooks import MAX_BACKOFF_MS, MIN_BACKOFF_MS, SWEEP_LEASE, broker, webhook_gave_up
from sync.errors import ChannelError
from sync.mail.transport import Transport, transport_from_url
from sync.store import connect_links
from sync.store import webhooks as events
from sync.store.db import utcnow
from sync.store.models import Integration, Person, WebhookEvent

log = logging.getLogger(__name__)

#: At most one reconnect email a day per person.
PER_PERSON = timedelta(days=1)
MAX_RETRIES = 20
PROVIDER_NAMES = {"google": "Google Calendar", "outlook": "Outlook"}


def send_reconnect(rt: Runtime, event_id: str) -> str:
    """Send the reconnect email a row owes; returns sent, covered, later, skipped.

    Raises:
      ChannelError: the mail transport refused (stored on the row first, the day given back).
    """
    s = rt.settings
    now = utcnow()
    with rt.store.tx() as db:
        row = db.get(WebhookEvent, event_id, with_for_update=True)
        if row is None or row.status != events.PENDING or row.type != events.RECONNECT_EMAIL:
            return "skipped"
        if not s.reconnect_email:
            events.dead(row, "not sent: CALSYNC_RECONNECT_EMAIL is off")
            return "skipped"
        link = db.get(Integration, row.data["integration_id"], with_for_update=True)
        if link is None or link.status != Link.NEEDS_RECONNECT:
            events.dead(row, "not sent: the calendar was reconnected or disconnected first")
            return "skipped"
        last = db.scalar(select(func.max(Integration.reconnect_mailed_at))
                         .where(Integration.user_id == link.user_id))
        if last is not None and last >= row.created_at:
            events.delivered(row, "covered by the reconnect email sent at " + last.isoformat())
            return "covered"
        if last is not None and last > now - PER_PERSON:
            row.next_attempt_at = last + PER_PERSON  # the sweeper sends it once the day has passed
            return "later"
        person = db.get(Person, link.user_id)
        to = (person.email if person is not None and person.email else None) or link.account_email
        if not to:
            events.dead(row, "not sent: no email address is known for this person")
            return "skipped"
        previous, link.reconnect_mailed_at = link.reconnect_mailed_at, now
        keys = connect_links.signing_keys(k.get_secret_value() for k in s.require("secret_keys"))
        url, expires, _ = connect_links.create(db, user_id=link.user_id, provider=link.provider, return_to=None,
                                               keys=keys, base_url=s.base_url,
                                               ttl=timedelta(seconds=s.connect_link_ttl_seconds))
        message = build(s.require("mail_from"), to, person.name if person else None, link.provider, url, expires)
        link_id = link.id
    try:
        _transport(rt).send(message, sender=s.require("mail_from"), recipient=to)
    except ChannelError as exc:
        with rt.store.tx() as db:
            back = db.get(Integration, link_id)
            if back is not None and back.reconnect_mailed_at == now:
                back.reconnect_mailed_at = previous
            again = db.get(WebhookEvent, event_id)
            if again is not None:
                events.failed(again, str(exc), utcnow() + timedelta(milliseconds=MAX_BACKOFF_MS) + SWEEP_LEASE)
        raise
    with rt.store.tx() as db:
        done = db.get(WebhookEvent, event_id)
        if done is not None:
            events.delivered(done)
    return "sent"


def build(sender: str, to: str, name: str | None, provider: str, url: str, expires: datetime) -> EmailMessage:
    """One plain-text email; every header value passes through ``header_safe``."""
    calendar = PROVIDER_NAMES.get(provider, "calendar")
    message = EmailMessage()
    message["From"] = header_safe(sender)
    message["To"] = formataddr((header_safe(name or ""), header_safe(to)))
    message["Subject"] = header_safe(f"Reconnect your {calendar} to keep your sessions on it")
    message["Message-ID"] = make_msgid(domain=header_safe(sender).rpartition("@")[2] or None)
    message["Auto-Submitted"] = "auto-generated"
    greeting = f"Hello {name}," if name else "Hello,"
    message.set_content(
        f"{greeting}\n\n"
        f"We can no longer put your mentoring sessions on your {calendar}: the connection stopped working "
        "(a changed password, or access was removed).\n\n"
        "Until you reconnect, your sessions come to you as email invitations instead.\n\n"
        f"Reconnect here (the link works once, until {expires:%Y-%m-%d %H:%M} UTC):\n{url}\n")
    return message


def _transport(rt: Runtime) -> Transport:
    channel = rt.channel("email")
    if isinstance(channel, EmailChannel):
        return channel.transport
    return transport_from_url(rt.settings.require("smtp_url"), timeout=rt.settings.io_timeout_seconds)


@dramatiq.actor(broker=broker, queue_name=QUEUE, max_retries=MAX_RETRIES,
                min_backoff=MIN_BACKOFF_MS, max_backoff=MAX_BACKOFF_MS, on_retry_exhausted=webhook_gave_up.actor_name)
def send_reconnect_email(event_id: str) -> None:
    send_reconnect(get_runtime(), event_id)
