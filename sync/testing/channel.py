"""A strict in-memory calendar channel, for tests of the engine that need no server.

It keeps what each person would see (one copy per person), records every call,
can be told to fail the next calls with any exception, and refuses what a real
calendar would never be asked by a correct engine: a copy addressed to someone
other than the placement's person, or an update of an event id it never issued.
Those refusals are ``AssertionError``s on purpose: they are engine bugs, not
channel errors, so the engine's own "a bug fails one placement" path must not
be what a test sees.
"""

from __future__ import annotations

from collections.abc import Callable

from sync.core.drift import Observed
from sync.core.render import RenderedEvent
from sync.providers.channel import Receipt, Target


class MemoryChannel:
    """A :class:`~sync.providers.channel.CalendarChannel` whose calendar is a dict.

    ``copies`` is the far side: what each person (by user id) currently holds.
    ``calls`` lists (operation, user id, SEQUENCE, event) in order; ``fail_with``
    raises its exceptions one per call, before anything changes; ``before`` runs
    ahead of every call (to race it, or to kill the caller mid-flight).
    """

    def __init__(self, name: str = "email") -> None:
        self.name = name
        self.calls: list[tuple[str, str, int, RenderedEvent]] = []
        self.copies: dict[str, RenderedEvent] = {}
        self.fail_with: list[Exception] = []
        self.before: Callable[[str, Target], None] | None = None

    def event_id(self, target: Target) -> str:
        """The id this calendar gives a placement's event (stable, like Google's chosen ids)."""
        return f"{self.name}-{target.placement_id}"

    def _act(self, op: str, target: Target, event: RenderedEvent) -> Receipt:
        assert event.recipient.user_id == target.user_id, (
            f"{op} of {target.user_id}'s placement carries {event.recipient.user_id}'s copy")
        assert target.external_id in (None, self.event_id(target)), (
            f"{op} names event {target.external_id!r}, which this calendar never issued for that placement")
        if self.before:
            self.before(op, target)
        if self.fail_with:
            raise self.fail_with.pop(0)
        self.calls.append((op, event.recipient.user_id, target.sequence, event))
        if op == "place":
            self.copies[event.recipient.user_id] = event
        else:
            self.copies.pop(event.recipient.user_id, None)
        return Receipt(external_id=self.event_id(target))

    def place(self, target: Target, event: RenderedEvent) -> Receipt:
        return self._act("place", target, event)

    def withdraw(self, target: Target, event: RenderedEvent) -> Receipt:
        return self._act("withdraw", target, event)

    def inspect(self, target: Target, event: RenderedEvent) -> list[Observed]:
        copy = self.copies.get(target.user_id)
        if copy is None:
            return []
        return [Observed(self.event_id(target), copy.title, copy.start, copy.end, copy.where)]

    def probe(self, integration_id: int) -> str:
        return f"{self.name} (in memory) reachable"

    def ops(self) -> list[tuple[str, str, int]]:
        """(operation, user id, SEQUENCE) of every call, in order."""
        return [(op, uid, seq) for op, uid, seq, _ in self.calls]
