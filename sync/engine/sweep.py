"""Re-enqueue sessions whose placements lag their revision.

A message can be lost (Redis restarted without persistence, a worker killed
before its ack reached Redis). The store still knows which sessions have not
settled, so the sweeper repairs what the queue forgot.
"""

from __future__ import annotations

from collections.abc import Callable

from sync.engine.people import finish_disconnects
from sync.engine.runtime import Runtime
from sync.engine.webhooks import sweep_events
from sync.store import sessions


def sweep(rt: Runtime, enqueue: Callable[[str], None]) -> list[str]:
    """Enqueue every session the store says is owed work, finish disconnects whose
    copies are all withdrawn, and enqueue the webhooks and reconnect emails still owed.
    Returns the enqueued session ids."""
    with rt.store.tx() as db:
        ids = sessions.lagging(db)
    for session_id in ids:
        enqueue(session_id)
    finish_disconnects(rt)
    sweep_events(rt)
    return ids
