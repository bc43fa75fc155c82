"""Desired placements vs recorded placements → actions.  (pure)

Level-triggered: the plan depends only on what the session says now and what
the store says was last done, never on the message that woke the worker. So
running it twice, late, or after a crash yields the same calendars.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum

from sync.render import Recipient, RenderedEvent


class Kind(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    WITHDRAW = "withdraw"
    NOTHING = "nothing"


@dataclass(frozen=True)
class Desired:
    """The copy one participant should have, through the channel they use now."""

    user_id: str
    channel: str
    event: RenderedEvent
    #: The session revision the event was rendered from.
    revision: int = 0


@dataclass(frozen=True)
class Recorded:
    """What the store says was last done for one (person, channel)."""

    placement_id: int
    user_id: str
    channel: str
    recipient: Recipient
    live: bool
    state: str
    sequence: int
    content_hash: str | None
    material_hash: str | None
    external_id: str | None
    last_error: str | None = None
    #: The session revision this copy was last placed from.
    revision: int = 0


@dataclass(frozen=True)
class Action:
    """One step for one person on one channel.

    ``sequence`` is the iCalendar SEQUENCE the step carries: it rises for a
    reschedule, a withdrawal and a re-invite, and stays for a details-only edit.
    """

    kind: Kind
    user_id: str
    channel: str
    event: RenderedEvent
    sequence: int
    reason: str
    placement_id: int | None = None


def _place(want: Desired, rec: Recorded | None, retry_failed: bool) -> Action:
    """Bring one person's copy on their current channel in line.

    ``rec.sequence`` is the highest SEQUENCE that may have gone out (it is
    written before each send), and ``rec.live`` says a copy may exist. So after
    a crash mid-send the next plan neither forgets the copy nor reuses a lower
    SEQUENCE; at worst the same UID and SEQUENCE go out again, which calendars
    treat as the same invite.
    """
    ev = want.event
    pid = rec.placement_id if rec else None

    def act(kind: Kind, sequence: int, reason: str) -> Action:
        return Action(kind, want.user_id, want.channel, ev, sequence, reason, pid)

    if rec is not None and rec.state == "failed" and not retry_failed:
        return act(Kind.NOTHING, rec.sequence, f"failed earlier ({rec.last_error}); resync to retry")
    if rec is None or rec.state == "pending":
        return act(Kind.CREATE, 0, "new placement")
    if not rec.live:
        return act(Kind.CREATE, rec.sequence + 1, "placed again after a withdrawal")
    # Placed from this very revision, it cannot differ: skip hashing, which is
    # most of the cost when a resync plans a whole platform.
    if rec.state == "placed" and (rec.revision == want.revision > 0 or rec.content_hash == ev.content_hash):
        return act(Kind.NOTHING, rec.sequence, "unchanged")
    if rec.material_hash != ev.material_hash:
        return act(Kind.UPDATE, rec.sequence + 1, "rescheduled or moved" if rec.material_hash else "placing again")
    return act(Kind.UPDATE, rec.sequence, "details changed")


def _withdraw(rec: Recorded, render_for: Callable[[Recipient], RenderedEvent], why: str,
              retry_failed: bool) -> Action:
    ev = render_for(rec.recipient)
    if rec.state == "failed" and not retry_failed:
        return Action(Kind.NOTHING, rec.user_id, rec.channel, ev, rec.sequence,
                      f"failed earlier ({rec.last_error}); resync to retry", rec.placement_id)
    return Action(Kind.WITHDRAW, rec.user_id, rec.channel, ev, rec.sequence + 1, why, rec.placement_id)


def plan(
    desired: Iterable[Desired],
    recorded: Iterable[Recorded],
    render_for: Callable[[Recipient], RenderedEvent],
    *,
    cancelled: bool = False,
    retry_failed: bool = False,
) -> list[Action]:
    """Every action needed so each person holds exactly the copy ``desired`` says.

    Parameters:
      desired: one entry per current participant (empty when the session is cancelled).
      recorded: every placement the store holds for the session.
      render_for: renders the session for a recorded recipient who is no longer
        a participant, so their CANCEL carries the session's current details.
      cancelled: the session is cancelled, so every live copy is withdrawn.
      retry_failed: also retry placements that exhausted their attempts.

    Returns:
      Actions in a safe order per person: withdrawals from an old channel come
      before placing on the new one, so a person never holds two copies.
    """
    wanted = {d.user_id: d for d in desired}
    by_user: dict[str, list[Recorded]] = {}
    for rec in recorded:
        by_user.setdefault(rec.user_id, []).append(rec)

    actions: list[Action] = []
    for user_id in sorted(set(wanted) | set(by_user)):
        want = wanted.get(user_id)
        recs = by_user.get(user_id, [])
        for rec in recs:
            if not rec.live or (want is not None and rec.channel == want.channel):
                continue
            if want is not None:
                why = f"channel switched from {rec.channel} to {want.channel}"
            elif cancelled:
                why = "session cancelled"
            else:
                why = "no longer a participant"
            actions.append(_withdraw(rec, render_for, why, retry_failed))
        if want is not None:
            same = next((r for r in recs if r.channel == want.channel), None)
            actions.append(_place(want, same, retry_failed))
    return actions
