"""Session + recorded placements + people's integrations → the plan.  (pure)

Routing decides each participant's channel: their active integration if this
process has that channel, email otherwise. Shared by the worker's reconcile
and by bulk resync planning, so both always agree on what a session needs.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime

from sync.core.plan import Action, Desired, Recorded, plan
from sync.core.render import Recipient, RenderedEvent, render
from sync.core.session import Participant, SessionLike


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
