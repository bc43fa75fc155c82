"""The store's side of the health page: aggregate reads, cheap at any table size.

``calsync status`` (ops) and each worker's health gauges (engine) read the same
numbers, so the queries live here, below both; what counts as a problem is
decided in :mod:`sync.ops.status`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session as Db

from sync.core.states import MEANING, PROBLEM_STATES, SETTLED, Link, State
from sync.store.db import utcnow
from sync.store.models import Integration, Placement, SessionRow

#: A session lagging longer than this is reported: the sweeper runs every few
#: minutes, so by now a worker should have settled it.
LAG_ALERT = timedelta(minutes=15)
#: How many user ids ``status`` names; the count is always exact.
RECONNECT_SHOWN = 20
#: How many unsettled placements ``status`` lists; the count is always exact.
UNSETTLED_SHOWN = 20


@dataclass(frozen=True)
class Lagging:
    """Sessions changed but not yet settled on every calendar, and the one waiting longest."""

    count: int
    oldest_id: str | None = None
    oldest_updated_at: datetime | None = None
    oldest_lag_seconds: float | None = None


@dataclass(frozen=True)
class Unsettled:
    """A placement that is not ``placed`` or ``withdrawn``, and why."""

    session_id: str
    user_id: str
    channel: str
    state: str
    reason: str | None
    next_attempt_at: datetime | None
    #: True when no timer or worker in flight will settle it by itself.
    attention: bool


def needs_attention(state: str, *, session_settled: bool, next_attempt_at: datetime | None,
                    lease_until: datetime | None, now: datetime, overdue: timedelta = LAG_ALERT) -> bool:
    """Whether an unsettled placement needs a person.  (pure)

    Failed, drifted, held and stranded copies always do. A copy still in motion
    (pending, sending, retrying) does once nothing will move it: its session
    already counts as settled (a killed worker's claim, a person removed
    mid-retry), its claim's lease ran out, or its retry is long overdue.
    """
    if state in PROBLEM_STATES:
        return True
    if session_settled:
        return True
    if state == State.SENDING and lease_until is not None and lease_until < now:
        return True
    return next_attempt_at is not None and next_attempt_at < now - overdue


@dataclass(frozen=True)
class StoreStats:
    #: (state, channel, count), ordered.
    placements: list[tuple[str, str, int]]
    reconnect_count: int
    reconnect_users: list[str]
    lagging: Lagging
    #: Every placement not settled, oldest first (at most UNSETTLED_SHOWN), and the exact count.
    unsettled: list[Unsettled] = field(default_factory=list)
    unsettled_count: int = 0
    #: (user, provider, copies still to withdraw) for integrations being disconnected.
    disconnecting: list[tuple[str, str, int]] = field(default_factory=list)
    #: Why placements are held (a few distinct reasons): the configuration to fix.
    held_causes: list[str] = field(default_factory=list)

    def count(self, *states: str) -> int:
        return sum(n for state, _, n in self.placements if state in states)


def store_stats(db: Db, now: datetime | None = None) -> StoreStats:
    """Aggregates only: cheap at any table size (one GROUP BY for all placements)."""
    now = now or utcnow()
    placements = [(s, c, int(n)) for s, c, n in db.execute(
        select(Placement.state, Placement.channel, func.count())
        .group_by(Placement.state, Placement.channel).order_by(Placement.state, Placement.channel))]
    needs = Integration.status == Link.NEEDS_RECONNECT
    reconnect_count = db.scalar(select(func.count()).select_from(Integration).where(needs)) or 0
    reconnect_users = list(db.scalars(select(Integration.user_id).where(needs)
                                      .order_by(Integration.updated_at, Integration.user_id).limit(RECONNECT_SHOWN)))
    behind = SessionRow.synced_revision < SessionRow.revision
    lag_count = db.scalar(select(func.count()).select_from(SessionRow).where(behind)) or 0
    oldest = db.execute(select(SessionRow.id, SessionRow.updated_at).where(behind)
                        .order_by(SessionRow.updated_at).limit(1)).first()
    lagging = Lagging(lag_count)
    if oldest is not None:
        lagging = Lagging(lag_count, oldest.id, oldest.updated_at, max(0.0, (now - oldest.updated_at).total_seconds()))
    unsettled_count, unsettled = _unsettled(db, now)
    held_causes = sorted(r or "" for r in db.scalars(
        select(Placement.last_error).where(Placement.state == State.HELD).distinct().limit(5)))
    return StoreStats(placements, reconnect_count, reconnect_users, lagging, unsettled, unsettled_count,
                      _disconnecting(db), held_causes)


def _unsettled(db: Db, now: datetime) -> tuple[int, list[Unsettled]]:
    moving = Placement.state.not_in(SETTLED)
    count = db.scalar(select(func.count()).select_from(Placement).where(moving)) or 0
    rows = db.execute(
        select(Placement.session_id, Placement.user_id, Placement.channel, Placement.state, Placement.last_error,
               Placement.next_attempt_at, Placement.lease_until, SessionRow.synced_revision >= SessionRow.revision)
        .join(SessionRow, SessionRow.id == Placement.session_id).where(moving)
        .order_by(Placement.updated_at, Placement.id).limit(UNSETTLED_SHOWN))
    return count, [Unsettled(sid, uid, channel, state, reason or MEANING[State(state)], due,
                             needs_attention(state, session_settled=bool(settled), next_attempt_at=due,
                                             lease_until=lease, now=now))
                   for sid, uid, channel, state, reason, due, lease, settled in rows]


def _disconnecting(db: Db) -> list[tuple[str, str, int]]:
    live = (select(func.count()).select_from(Placement)
            .where(Placement.user_id == Integration.user_id, Placement.channel == Integration.provider,
                   Placement.live.is_(True)).scalar_subquery())
    return [(u, p, int(n)) for u, p, n in db.execute(
        select(Integration.user_id, Integration.provider, live).where(Integration.status == Link.DISCONNECTING)
        .order_by(Integration.user_id))]
