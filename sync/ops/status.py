"""The health page in one read: queue, dead letters, placements, integrations, lag.

Gathering is two small reads (Redis counters, a handful of aggregate queries);
deciding what counts as a problem is :func:`find_problems`, a pure function,
so the thresholds are tested without a server.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

import redis
from sqlalchemy import func, select
from sqlalchemy.orm import Session as Db

from sync.config import Settings
from sync.core.states import MEANING, SETTLED, State
from sync.errors import ConfigError
from sync.store.db import utcnow
from sync.store.models import Integration, Placement, SessionRow

#: A session lagging longer than this is reported: the sweeper runs every few
#: minutes, so by now a worker should have settled it.
LAG_ALERT = timedelta(minutes=15)
#: How many user ids ``status`` names; the count is always exact.
RECONNECT_SHOWN = 20
#: Placement states that need a person whatever else is going on (see :mod:`sync.core.states`).
PROBLEM_STATES = (State.FAILED, State.DRIFT, State.HELD, State.STRANDED)
#: What an operator is told to do about each of them.
ADVICE = {
    State.FAILED: "see `calsync sessions show ID`; retried hourly while upcoming, at once by `calsync resync`",
    State.DRIFT: "the person deleted the event; `calsync resync --session ID` places it again",
    State.HELD: "calsync's configuration is at fault; they resume by themselves once it is fixed",
    State.STRANDED: "a copy sits behind a dead token; it moves once the person reconnects",
}
#: How many unsettled placements ``status`` lists; the count is always exact.
UNSETTLED_SHOWN = 20
#: Seconds before a CLI gives up on Redis: an operator waits on it, a worker does not.
REDIS_TIMEOUT = 3.0

_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def broker_client(settings: Settings) -> redis.Redis | None:
    """A Redis client for the broker URL with short timeouts; None for the embedded ``memory://``.

    Built here rather than taken from the installed Dramatiq broker so a
    command that only reads counters never waits on the worker's long timeouts.
    """
    url = settings.broker_url
    if url.startswith("memory://"):
        return None
    if not url.startswith(_REDIS_SCHEMES):
        raise ConfigError(f"CALSYNC_BROKER_URL: unsupported scheme in {url.split('://')[0]!r}; "
                          "use redis:// or memory://")
    return redis.Redis.from_url(url, socket_connect_timeout=REDIS_TIMEOUT, socket_timeout=REDIS_TIMEOUT)


@dataclass(frozen=True)
class QueueStats:
    """Counters of one Dramatiq queue in Redis.

    ``in_flight`` is fetched by a worker but not yet acked; ``delayed`` counts
    the delay queue's payloads, which include the delayed messages workers
    hold in memory until their eta (the DQ list alone would miss those).
    """

    queue: str
    queued: int
    in_flight: int
    delayed: int
    dead_letters: int


def queue_stats(client: redis.Redis, queue: str, namespace: str = "dramatiq") -> QueueStats:
    """One round trip: the key layout is Dramatiq's ``dispatch.lua``."""
    base = f"{namespace}:{queue}"
    pipe = client.pipeline(transaction=False)
    pipe.llen(base)
    pipe.hlen(f"{base}.msgs")
    pipe.hlen(f"{base}.DQ.msgs")
    pipe.zcard(f"{base}.XQ")
    queued, payloads, delayed, dead = pipe.execute()
    return QueueStats(queue, queued, max(0, payloads - queued), delayed, dead)


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
    needs = Integration.status == "needs_reconnect"
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
        select(Integration.user_id, Integration.provider, live).where(Integration.status == "disconnecting")
        .order_by(Integration.user_id))]


@dataclass(frozen=True)
class Workers:
    """Worker processes seen by their heartbeat (see :mod:`sync.engine.heartbeat`)."""

    alive: int
    last_seen_seconds: float | None


def find_problems(queue: QueueStats | None, store: StoreStats, lag_alert: timedelta = LAG_ALERT,
                  workers: Workers | None = None) -> list[str]:
    """What an operator must act on; an empty list means healthy (exit 0).

    A queue backlog alone is not a problem (a bulk resync makes one on
    purpose) — unless no worker has been seen recently to work it off; lag
    is, once it outlasts ``lag_alert``.
    """
    found = []
    waiting = 0 if queue is None else queue.queued + queue.delayed
    if workers is not None and waiting and not workers.alive:
        seen = ("never seen" if workers.last_seen_seconds is None
                else f"last seen {ago(workers.last_seen_seconds)} ago")
        found.append(f"{waiting} message(s) queued and no worker is running ({seen}): start `calsync worker`")
    if queue is not None and queue.dead_letters:
        found.append(f"{queue.dead_letters} dead letter(s): see `calsync dead-letters list`")
    for state in PROBLEM_STATES:
        if not (n := store.count(state)):
            continue
        if state == State.HELD:
            causes = store.held_causes
            found.append(f"{n} placement(s) held: {'; '.join(causes) or 'see `calsync sessions show ID`'}"
                         f" — {ADVICE[state]}")
        else:
            found.append(f"{n} placement(s) {state}: {ADVICE[state]}")
    stuck = [u for u in store.unsettled if u.attention and u.state not in PROBLEM_STATES]
    if stuck:
        first = stuck[0]
        found.append(f"{len(stuck)} placement(s) stuck in {', '.join(sorted({u.state for u in stuck}))} with "
                     f"nothing scheduled to move them (e.g. {first.session_id}/{first.user_id}): "
                     "`calsync sweep` re-enqueues them")
    for user_id, provider, remaining in store.disconnecting:
        found.append(f"{provider} of {user_id} is disconnecting: {remaining} calendar copies still to remove "
                     "(retried automatically; the token is revoked once none is left)")
    if store.reconnect_count:
        found.append(f"{store.reconnect_count} integration(s) need a reconnect: "
                     "see `calsync integrations list --status needs_reconnect`")
    lag = store.lagging
    if lag.oldest_lag_seconds is not None and lag.oldest_lag_seconds > lag_alert.total_seconds():
        found.append(f"session {lag.oldest_id} has lagged for {ago(lag.oldest_lag_seconds)}: "
                     "is a worker running? (`calsync sweep` re-enqueues it)")
    return found


def ago(seconds: float) -> str:
    """A duration an operator reads at a glance: ``42s``, ``17m``, ``3h 5m``, ``2d 4h``."""
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


#: What ``status`` says instead of counters when the broker lives inside each process.
EMBEDDED_NOTE = "embedded broker: nothing queued outside this process"


@dataclass(frozen=True)
class Status:
    queue: QueueStats | None
    store: StoreStats
    problems: list[str] = field(default_factory=list)
    workers: Workers | None = None

    def as_dict(self) -> dict[str, Any]:
        lag = self.store.lagging
        return {
            "ok": not self.problems,
            "problems": self.problems,
            "broker": ({"embedded": True, "note": EMBEDDED_NOTE} if self.queue is None
                       else {"embedded": False, **asdict(self.queue)}),
            "workers": None if self.workers is None else {
                "alive": self.workers.alive,
                "last_seen_seconds": None if self.workers.last_seen_seconds is None
                else round(self.workers.last_seen_seconds, 1)},
            "placements": [{"state": s, "channel": c, "count": n} for s, c, n in self.store.placements],
            "failed_placements": self.store.count("failed"),
            "drift_placements": self.store.count("drift"),
            "needs_reconnect": {"count": self.store.reconnect_count, "user_ids": self.store.reconnect_users},
            "unsettled": {
                "count": self.store.unsettled_count,
                "placements": [{"session_id": u.session_id, "user_id": u.user_id, "channel": u.channel,
                                "state": u.state, "reason": u.reason, "attention": u.attention,
                                "next_attempt_at": u.next_attempt_at.isoformat() if u.next_attempt_at else None}
                               for u in self.store.unsettled],
            },
            "disconnecting": [{"user_id": u, "provider": p, "remaining": n} for u, p, n in self.store.disconnecting],
            "lagging": {
                "count": lag.count,
                "oldest": None if lag.oldest_id is None else {
                    "session_id": lag.oldest_id,
                    "updated_at": lag.oldest_updated_at.isoformat() if lag.oldest_updated_at else None,
                    "lag_seconds": round(lag.oldest_lag_seconds or 0.0, 1),
                },
            },
        }


def gather(settings: Settings, db: Db, queue: str) -> Status:
    """Read everything ``calsync status`` shows; Redis and database errors propagate to the CLI."""
    from sync.engine.heartbeat import workers_seen

    client = broker_client(settings)
    stats = workers = None
    if client is not None:
        with client:
            stats = queue_stats(client, queue)
            workers = Workers(*workers_seen(client))
    store = store_stats(db)
    return Status(stats, store, find_problems(stats, store, workers=workers), workers)
