"""The channel interface: how a rendered event reaches one person.

Every channel (emailed invites, Google Calendar, Outlook) implements the same
two operations, so the engine treats them alike. A channel raises only the
errors in :mod:`sync.errors`; anything else is a bug, which fails that one
placement with its reason (see :mod:`sync.engine.apply`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from sync.core.drift import Observed
from sync.core.render import RenderedEvent

if TYPE_CHECKING:
    from sync.config import Settings
    from sync.quota import QuotaBackend
    from sync.store.crypto import CredentialBox
    from sync.store.db import Store


@dataclass(frozen=True)
class Target:
    """Where one placement lives, as recorded before the action.

    Parameters:
      placement_id(int): the store row, used as the idempotency key (outbox, event ids).
      user_id(str): the person.
      external_id(str | None): the provider's id for the event, once known.
      sequence(int): the iCalendar SEQUENCE to send with this action.
      integration_id(int | None): the credentials to act with; None for email.
      maybe_exists(bool): a copy may exist (it was placed, or an earlier attempt may have
        created one whose answer was lost); False for a first placement, so a channel
        can skip looking for one.
      generation(int): rises each time calsync withdrew the copy; a channel derives its
        idempotency keys (event ids, transaction ids) from it, so a copy placed again
        after a withdrawal is a new event, never the deleted one.
      in_doubt(bool): an earlier attempt's outcome is unknown, so a copy other than
        ``external_id`` may exist: a withdrawal must look for every copy by calsync's tag.
      revision(int): the session revision this action was planned from; with the
        SEQUENCE it names one send attempt (the email outbox key).
    """

    placement_id: int
    user_id: str
    external_id: str | None
    sequence: int
    integration_id: int | None = None
    maybe_exists: bool = True
    generation: int = 0
    in_doubt: bool = False
    revision: int = 0


@dataclass(frozen=True)
class Receipt:
    """What a channel reports back after a successful action."""

    external_id: str | None = None
    detail: str = ""
    #: The id generation the channel ended up using, when it had to move past the one it was given.
    generation: int | None = None


class Channel(Protocol):
    """A way to put a session on one person's calendar."""

    name: str

    def place(self, target: Target, event: RenderedEvent) -> Receipt:
        """Create or update the person's copy so that it shows ``event``.

        Must be idempotent: placing the same event twice leaves one copy.
        """

    def withdraw(self, target: Target, event: RenderedEvent) -> Receipt:
        """Remove the person's copy; already gone counts as success."""


@runtime_checkable
class CalendarChannel(Channel, Protocol):
    """A channel that writes into a calendar calsync can read back (Google, Outlook).

    Support commands rely on these two: ``diagnose`` and ``drift scan`` read the
    copies back, ``diagnose user`` checks the person's token live.
    """

    def inspect(self, target: Target, event: RenderedEvent) -> list[Observed]:
        """Every copy of this placement on the calendar, found by calsync's tag (deleted ones included)."""

    def probe(self, integration_id: int) -> str:
        """One cheap live call with the person's credentials; says what answered."""


class ProviderChannel:
    """What every calendar provider's channel is built from.

    The store (credentials are read there, refreshed tokens written back), the
    box they are sealed in, and the quota shared by every worker process; the
    lock guards each channel's per-account caches across worker threads.
    """

    name: str

    def __init__(self, settings: Settings, store: Store, box: CredentialBox, quota_backend: QuotaBackend) -> None:
        self.settings = settings
        self.store = store
        self.box = box
        self.quota = quota_backend
        self._lock = threading.Lock()
