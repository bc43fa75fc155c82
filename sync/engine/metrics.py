"""Prometheus metrics: counters for what the channels did, gauges for the system's health.

In worker processes ``calsync worker`` points PROMETHEUS_MULTIPROC_DIR at a
fresh folder before Python starts, so these are aggregated across processes
and served by Dramatiq's own exposition server next to its message metrics
(see ``CALSYNC_METRICS_PORT``). Counters are summed; each gauge shows the most
recent value any live process set (every worker refreshes them on its
heartbeat, so one dead process never freezes them).
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Gauge

#: One increment per action a channel was asked to carry out, by how it ended.
ACTIONS = Counter(
    "calsync_placement_actions_total",
    "Placement actions run through a channel, by channel, action and outcome.",
    ["channel", "action", "outcome"],
)


def count(channel: str, action: str, outcome: str) -> None:
    ACTIONS.labels(channel=channel, action=action, outcome=outcome).inc()


_MODE = "livemostrecent"
#: Messages waiting in calsync's queue, by where they wait.
BACKLOG = Gauge("calsync_queue_backlog", "Messages in calsync's queue: queued, in flight, delayed, dead.",
                ["state"], multiprocess_mode=_MODE)
#: Placements by lifecycle state and channel (see sync.core.states).
PLACEMENTS = Gauge("calsync_placements", "Placements by state and channel.", ["state", "channel"],
                   multiprocess_mode=_MODE)
#: Integrations whose person must reconnect.
RECONNECTS = Gauge("calsync_integrations_needing_reconnect", "Integrations in needs_reconnect.",
                   multiprocess_mode=_MODE)
#: Seconds the oldest lagging session has waited since it changed (0 when none lags).
OLDEST_LAG = Gauge("calsync_oldest_lagging_session_seconds", "Age of the oldest change not yet settled.",
                   multiprocess_mode=_MODE)
#: Webhook events for the platform by where they stand (pending, delivered, dead), read from the store.
WEBHOOK_EVENTS = Gauge("calsync_webhook_events", "Webhook events by status: pending, delivered, dead.", ["status"],
                       multiprocess_mode=_MODE)
#: One increment per delivery attempt of a webhook, by how it ended (delivered, failed).
WEBHOOK_DELIVERIES = Counter("calsync_webhook_deliveries_total", "Webhook delivery attempts, by outcome.",
                             ["outcome"])
#: Channels every placement gauge is written for, so a state that empties reads 0, not its last value.
CHANNELS = ("email", "google", "outlook")


def refresh_health(client: Any | None, rt: Any | None = None) -> None:
    """Read the store (and the queue, when ``client`` is Redis) and set every health gauge.

    ``rt`` is the runtime whose store is read (this process's, by default).
    """
    from sqlalchemy import func, select

    from sync.core.states import State
    from sync.engine.queues import queue_stats
    from sync.engine.runtime import get_runtime
    from sync.store.models import WebhookEvent
    from sync.store.stats import store_stats

    if client is not None:
        q = queue_stats(client)
        for state, n in (("queued", q.queued), ("in_flight", q.in_flight), ("delayed", q.delayed),
                         ("dead", q.dead_letters)):
            BACKLOG.labels(state=state).set(n)
    with (rt or get_runtime()).store.tx() as db:
        stats = store_stats(db)
        webhooks = dict(db.execute(select(WebhookEvent.status, func.count()).group_by(WebhookEvent.status)).all())
    for status in ("pending", "delivered", "dead"):
        WEBHOOK_EVENTS.labels(status=status).set(webhooks.get(status, 0))
    counts = {(state, channel): n for state, channel, n in stats.placements}
    for state in State:
        for channel in sorted(set(CHANNELS) | {c for _, c in counts}):
            PLACEMENTS.labels(state=state.value, channel=channel).set(counts.get((state.value, channel), 0))
    RECONNECTS.set(stats.reconnect_count)
    OLDEST_LAG.set(stats.lagging.oldest_lag_seconds or 0.0)
