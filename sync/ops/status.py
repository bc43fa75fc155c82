"""The health page in one read: queue, dead letters, placements, integrations, lag.

Gathering is two small reads (Redis counters, a handful of aggregate queries);
deciding what counts as a problem is :func:`find_problems`, a pure function,
so the thresholds are tested without a server.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session as Db

from sync.config import Settings
from sync.core.states import PROBLEM_STATES, State
from sync.engine.queues import QueueKeys, QueueStats, broker_client, queue_stats
from sync.store.stats import LAG_ALERT, StoreStats, store_stats

#: What an operator is told to do about each of them.
ADVICE = {
    State.FAILED: "see `calsync sessions show ID`; retried hourly while upcoming, at once by `calsync resync`",
    State.DRIFT: "the person deleted the event; `calsync resync --session ID` places it again",
    State.HELD: "calsync's configuration is at fault; they resume by themselves once it is fixed",
    State.STRANDED: "a copy sits behind a dead token; it moves once the person reconnects",
}

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
            stats = queue_stats(client, QueueKeys(queue))
            workers = Workers(*workers_seen(client))
    store = store_stats(db)
    return Status(stats, store, find_problems(stats, store, workers=workers), workers)
