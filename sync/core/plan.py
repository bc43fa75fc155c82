"""Session + recorded placements + people's integrations → actions.  (pure)

Level-triggered: the plan depends only on what the session says now and what
the store says was last done, never on the message that woke the worker. So
running it twice, late, or after a crash yields the same calendars.

:func:`plan_session` routes each participant (their active integration if this
process has that channel, email otherwise) and hands the desired copies to
:func:`plan`. The worker's reconcile and bulk resync planning both call it, so
both always agree on what a session needs.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from sync.core.render import Recipient, RenderedEvent, render
from sync.core.session import Participant, SessionLike
from sync.core.states import State

#: How early a retry may arrive and still count as due.
EARLY_TOLERANCE = timedelta(seconds=2)


class Kind(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    WITHDRAW = "withdraw"
    #: A copy that never reached anyone and is no longer wanted: recorded as
    #: withdrawn without calling the channel.
    SETTLE = "settle"
    NOTHING = "nothing"


def address_of(channel: str, email: str) -> str:
    """The address part of a copy's identity: where an emailed invite goes, and
    nothing for a calendar channel (the event lives in the connected account)."""
    return email.strip().lower() if channel == "email" else ""


@dataclass(frozen=True)
class Desired:
    """The copy one participant should have, through the channel they use now."""

    user_id: str
    channel: str
    event: RenderedEvent
    #: The session revision the event was rendered from.
    revision: int = 0

    @property
    def address(self) -> str:
        return address_of(self.channel, self.event.recipient.email)


@dataclass(frozen=True)
class Recorded:
    """What the store says was last done for one copy (person × channel × address)."""

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
    #: The session revision of the latest attempt; a newer one re-arms a failure.
    attempt_revision: int = 0
    #: When a scheduled retry (or a failed copy's long backoff) comes due.
    next_attempt_at: datetime | None = None
    address: str | None = None

    def __post_init__(self) -> None:
        if self.address is None:
            object.__setattr__(self, "address", address_of(self.channel, self.recipient.email))

    def waiting(self, revision: int, now: datetime | None) -> bool:
        """True while this copy waits for a scheduled retry and nothing new asks for it sooner.

        A new revision (an edit, or a routing change of any participant) is new
        intent: it re-arms the copy at once, whatever failed before.
        """
        if self.state not in (State.RETRYING, State.FAILED, State.HELD) or self.attempt_revision < revision:
            return False
        # A message scheduled for the retry may arrive a moment early (another host's clock):
        # it still counts as due, or the retry would wait for the next sweep.
        return self.next_attempt_at is None or now is None or self.next_attempt_at > now + EARLY_TOLERANCE


@dataclass(frozen=True)
class Action:
    """One step for one person on one channel.

    ``sequence`` is the iCalendar SEQUENCE the step carries: it rises for a
    reschedule, a withdrawal and a re-invite, and stays for a details-only edit.
    ``settled`` is False for a NOTHING that only waits for a scheduled retry:
    the session is not in line yet.
    """

    kind: Kind
    user_id: str
    channel: str
    event: RenderedEvent
    sequence: int
    reason: str
    placement_id: int | None = None
    address: str = ""
    settled: bool = True


def _waiting(rec: Recorded, act: Callable[[Kind, int, str], Action], settled: bool) -> Action:
    when = f" at {rec.next_attempt_at:%Y-%m-%d %H:%M} UTC" if rec.next_attempt_at else ""
    action = act(Kind.NOTHING, rec.sequence, f"{rec.state} ({rec.last_error}); next try{when}")
    return replace(action, settled=settled or rec.state == State.FAILED)


def _place(want: Desired, rec: Recorded | None, floor: int, retry_failed: bool, now: datetime | None,
           place_past: bool = True) -> Action:
    """Bring one person's copy on their current channel and address in line.

    ``rec.sequence`` is the highest SEQUENCE that may have gone out (it is
    written before each send), and ``rec.live`` says a copy may exist. So after
    a crash mid-send the next plan neither forgets the copy nor reuses a lower
    SEQUENCE; at worst the same UID and SEQUENCE go out again, which calendars
    treat as the same invite. ``floor`` is the lowest SEQUENCE a brand-new copy
    may carry (above what this person's other copies used, in case the new
    address reaches the same calendar).
    """
    ev = want.event
    pid = rec.placement_id if rec else None

    def act(kind: Kind, sequence: int, reason: str) -> Action:
        return Action(kind, want.user_id, want.channel, ev, sequence, reason, pid, want.address)

    if rec is not None and not retry_failed and rec.waiting(want.revision, now):
        return _waiting(rec, act, settled=False)
    if not place_past and now is not None and ev.end <= now and (rec is None or not rec.live):
        # Nobody wants a fresh invite for a session that is over; updates and withdrawals of
        # copies people already hold still go out.
        return act(Kind.NOTHING, rec.sequence if rec else floor, "the session has ended; no new copy is placed")
    if rec is None or rec.state == State.PENDING:
        return act(Kind.CREATE, floor, "new placement")
    if not rec.live and rec.revision == 0 and rec.state not in (State.WITHDRAWN, State.DRIFT):
        # Never placed, and the attempts so far are known to have delivered nothing.
        return act(Kind.CREATE, rec.sequence, f"trying again ({rec.state}: {rec.last_error})")
    if not rec.live:
        why = "placed again after a withdrawal" if rec.state in (State.WITHDRAWN, State.DRIFT) else \
            f"trying again ({rec.state}: {rec.last_error})"
        return act(Kind.CREATE, rec.sequence + 1, why)
    # Placed from this very revision, it cannot differ: skip hashing, which is
    # most of the cost when a resync plans a whole platform.
    if rec.state == State.PLACED and (rec.revision == want.revision > 0 or rec.content_hash == ev.content_hash):
        return act(Kind.NOTHING, rec.sequence, "unchanged")
    if rec.material_hash != ev.material_hash:
        return act(Kind.UPDATE, rec.sequence + 1, "rescheduled or moved" if rec.material_hash else "placing again")
    return act(Kind.UPDATE, rec.sequence, "details changed")


def _withdraw(rec: Recorded, render_for: Callable[[Recipient], RenderedEvent], why: str, revision: int,
              retry_failed: bool, now: datetime | None) -> Action:
    ev = render_for(rec.recipient)

    def act(kind: Kind, sequence: int, reason: str) -> Action:
        return Action(kind, rec.user_id, rec.channel, ev, sequence, reason, rec.placement_id, rec.address or "")

    if not rec.live:
        return act(Kind.SETTLE, rec.sequence, f"{why}; no copy was ever delivered")
    if not retry_failed and rec.waiting(revision, now):
        return _waiting(rec, act, settled=False)
    return act(Kind.WITHDRAW, rec.sequence + 1, why)


def plan(
    desired: Iterable[Desired],
    recorded: Iterable[Recorded],
    render_for: Callable[[Recipient], RenderedEvent],
    *,
    cancelled: bool = False,
    retry_failed: bool = False,
    revision: int = 0,
    now: datetime | None = None,
    place_past: bool = True,
) -> list[Action]:
    """Every action needed so each person holds exactly the copy ``desired`` says.

    Parameters:
      desired: one entry per current participant (empty when the session is cancelled).
      recorded: every placement the store holds for the session.
      render_for: renders the session for a recorded recipient who is no longer
        a participant, so their CANCEL carries the session's current details.
      cancelled: the session is cancelled, so every live copy is withdrawn.
      retry_failed: retry now even copies waiting for a scheduled retry.
      revision: the session's current revision; copies that last tried an older one are re-armed.
      now: the time scheduled retries are compared with (None: every retry counts as due).
      place_past: also place new copies of a session that ended before ``now``.

    Returns:
      Actions in a safe order per person: withdrawals of every other copy (an old
      channel, an old address) come before placing the wanted one, so a person
      never holds two copies.
    """
    wanted = {d.user_id: d for d in desired}
    by_user: dict[str, list[Recorded]] = {}
    for rec in recorded:
        by_user.setdefault(rec.user_id, []).append(rec)

    actions: list[Action] = []
    for user_id in sorted(set(wanted) | set(by_user)):
        want = wanted.get(user_id)
        recs = by_user.get(user_id, [])
        same = None if want is None else next(
            (r for r in recs if r.channel == want.channel and r.address == want.address), None)
        for rec in recs:
            if rec is same or (not rec.live and rec.state in (State.WITHDRAWN, State.DRIFT)):
                continue
            if want is not None and rec.channel != want.channel:
                why = f"channel switched from {rec.channel} to {want.channel}"
            elif want is not None:
                why = "address changed"
            elif cancelled:
                why = "session cancelled"
            else:
                why = "no longer a participant"
            actions.append(_withdraw(rec, render_for, why, revision, retry_failed, now))
        if want is not None:
            others = [r.sequence + (1 if r.live else 0) for r in recs if r is not same and r.channel == want.channel]
            floor = max(others) + 1 if others else 0
            actions.append(_place(want, same, floor, retry_failed, now, place_past))
    return actions


@dataclass(frozen=True)
class Usable:
    """An integration whose credentials may be used; ``active`` ones are also a route."""

    integration_id: int
    user_id: str
    provider: str
    active: bool


@dataclass(frozen=True)
class SessionPlan:
    actions: list[Action]
    #: (user_id, channel) → integration id to act with.
    integration_ids: dict[tuple[str, str], int]


def plan_session(session: SessionLike, recorded: Iterable[Recorded], usable: Iterable[Usable],
                 channels: Collection[str], *, revision: int = 0, retry_failed: bool = False,
                 now: datetime | None = None, place_past: bool = True) -> SessionPlan:
    recs = list(recorded)
    creds = {(u.user_id, u.provider): u.integration_id for u in usable if u.provider in channels}
    routes = {u.user_id: u.provider for u in usable if u.active and (u.user_id, u.provider) in creds}
    cancelled = session.status == "cancelled"
    desired = [] if cancelled else [
        Desired(p.user_id, routes.get(p.user_id, "email"), render(session, p), revision)
        for p in session.participants
    ]

    def render_for(r: Recipient) -> RenderedEvent:
        return render(session, Participant(user_id=r.user_id, email=r.email, name=r.name, timezone=r.timezone))

    # A live copy behind credentials that died cannot be withdrawn; it stays
    # until the person reconnects, and the planner must not try.
    reachable = [r for r in recs if r.channel == "email" or not r.live or (r.user_id, r.channel) in creds]
    actions = plan(desired, reachable, render_for, cancelled=cancelled, retry_failed=retry_failed,
                   revision=revision, now=now, place_past=place_past)
    return SessionPlan(actions, creds)
