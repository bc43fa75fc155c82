"""A test-only model of a recipient's calendar app reading iMIP mail.

It applies RFC 5546 §2.1.5 ordering: per UID the highest SEQUENCE wins and
DTSTAMP breaks ties; a REQUEST shows the event, a CANCEL removes it. Tests
assert on what a person would see, not on which mails were sent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from email.message import EmailMessage

from sync.testing.mail import read_invite


@dataclass
class Entry:
    sequence: int
    dtstamp: object
    method: str
    summary: str
    start: object
    location: str
    description: str = ""


@dataclass
class CalendarApp:
    """Every recipient's view, keyed by (address, UID)."""

    entries: dict[tuple[str, str], Entry] = field(default_factory=dict)
    received: list[tuple[str, str, int]] = field(default_factory=list)  #: (address, METHOD, SEQUENCE)
    sequence_went_down: list[str] = field(default_factory=list)

    def deliver(self, raw: bytes, recipient: str) -> None:
        invite = read_invite(raw)
        assert invite is not None, "a message without a text/calendar part"
        method, ev = invite.method, invite.event
        assert invite.part.get_param("method").upper() == method
        uid, seq = invite.uid, invite.sequence
        self.received.append((recipient, method, seq))
        key = (recipient, uid)
        new = Entry(seq, ev.DTSTAMP, method, str(ev.get("SUMMARY", "")), ev.start, str(ev.get("LOCATION", "")),
                    str(ev.get("DESCRIPTION", "")))
        old = self.entries.get(key)
        if old is not None and seq < old.sequence:
            self.sequence_went_down.append(f"{recipient}: {old.sequence} -> {seq}")
            return
        if old is None or (seq, new.dtstamp) >= (old.sequence, old.dtstamp):
            self.entries[key] = new

    def showing(self, recipient: str) -> list[Entry]:
        return [e for (addr, _), e in self.entries.items() if addr == recipient and e.method == "REQUEST"]


class AppTransport:
    """A mail transport that hands every message straight to the calendar app."""

    def __init__(self, app: CalendarApp) -> None:
        self.app = app
        self.crash_after_send = 0

    def send(self, message: EmailMessage, *, sender: str, recipient: str) -> None:
        self.app.deliver(message.as_bytes(), recipient)
        if self.crash_after_send:
            self.crash_after_send -= 1
            raise SimulatedCrash("worker died after the SMTP server accepted the message")

    def close(self) -> None:
        pass


class SimulatedCrash(Exception):
    """Stands for a worker killed mid-action: nothing after it in that run happens."""
