"""Prometheus counters for what the channels did.

In worker processes ``calsync worker`` points PROMETHEUS_MULTIPROC_DIR at a
fresh folder before Python starts, so these counters are summed across
processes and served by Dramatiq's own exposition server next to its
message metrics (see ``CALSYNC_METRICS_PORT``).
"""

from __future__ import annotations

from prometheus_client import Counter

#: One increment per action a channel was asked to carry out, by how it ended.
ACTIONS = Counter(
    "calsync_placement_actions_total",
    "Placement actions run through a channel, by channel, action and outcome.",
    ["channel", "action", "outcome"],
)


def count(channel: str, action: str, outcome: str) -> None:
    ACTIONS.labels(channel=channel, action=action, outcome=outcome).inc()
