"""The channel interface: how a rendered event reaches one person.

Every channel (emailed invites, Google Calendar, Outlook) implements the same
two operations, so the engine treats them alike. A channel raises only the
errors in :mod:`sync.errors`; anything else is a bug and is retried by the
worker like any crash.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from sync.render import RenderedEvent


@dataclass(frozen=True)
class Target:
    """Where one placement lives, as recorded before the action.

    Parameters:
      placement_id(int): the store row, used as the idempotency key (outbox, event ids).
      user_id(str): the person.
      external_id(str | None): the provider's id for the event, once known.
      sequence(int): the iCalendar SEQUENCE to send with this action.
      integration_id(int | None): the credentials to act with; None for email.
      maybe_exists(bool): an earlier attempt may have created a copy whose answer was
        lost; False for a first placement, so a channel can skip looking for one.
    """

    placement_id: int
    user_id: str
    external_id: str | None
    sequence: int
    integration_id: int | None = None
    maybe_exists: bool = True


@dataclass(frozen=True)
class Receipt:
    """What a channel reports back after a successful action."""

    external_id: str | None = None
    detail: str = ""


class Channel(Protocol):
    """A way to put a session on one person's calendar."""

    name: str

    def place(self, target: Target, event: RenderedEvent) -> Receipt:
        """Create or update the person's copy so that it shows ``event``.

        Must be idempotent: placing the same event twice leaves one copy.
        """

    def withdraw(self, target: Target, event: RenderedEvent) -> Receipt:
        """Remove the person's copy; already gone counts as success."""
