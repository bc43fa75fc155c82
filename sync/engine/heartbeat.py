"""Worker heartbeats in Redis, and the health gauges each worker process keeps fresh.

``calsync status`` must notice when work is queued and nobody is working: a
queue of 300 messages with every worker dead otherwise looks like a quiet day.
Each worker process writes its id and the time into one sorted set every few
seconds; ``status`` counts the ids seen within :data:`STALE_AFTER`. The same
timer refreshes the Prometheus gauges (backlog, placements by state,
reconnects, lag), so an alert can fire from metrics alone.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time

import dramatiq
import redis
from dramatiq.middleware import Middleware

log = logging.getLogger(__name__)

#: Sorted set: member = worker process id, score = when it was last seen (Unix seconds).
KEY = "calsync:workers"
#: Seconds between two heartbeats of one process (and two refreshes of its gauges).
INTERVAL = 10.0
#: A worker not seen for this many seconds counts as gone.
STALE_AFTER = 60.0


def beat(client: redis.Redis, worker_id: str, now: float | None = None) -> None:
    """Record that ``worker_id`` is alive, and forget workers gone for a long while."""
    now = time.time() if now is None else now
    pipe = client.pipeline(transaction=False)
    pipe.zadd(KEY, {worker_id: now})
    pipe.zremrangebyscore(KEY, "-inf", now - 100 * STALE_AFTER)
    pipe.execute()


def workers_seen(client: redis.Redis, now: float | None = None,
                 within: float = STALE_AFTER) -> tuple[int, float | None]:
    """(workers seen within ``within`` seconds, seconds since any worker was last seen or None if never)."""
    now = time.time() if now is None else now
    pipe = client.pipeline(transaction=False)
    pipe.zcount(KEY, now - within, "+inf")
    pipe.zrevrange(KEY, 0, 0, withscores=True)
    alive, last = pipe.execute()
    return int(alive), (now - float(last[0][1])) if last else None


class Heartbeat(Middleware):
    """Beats every :data:`INTERVAL` seconds from a daemon thread in each worker process."""

    def __init__(self, *, gauges: bool = True) -> None:
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"
        #: Refresh the health gauges too (only worth the queries when metrics are served).
        self.gauges = gauges
        self._stop = threading.Event()

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        threading.Thread(target=self._loop, args=(broker,), name="calsync-heartbeat", daemon=True).start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._stop.set()
        client = getattr(broker, "client", None)
        if client is not None:
            try:
                client.zrem(KEY, self.worker_id)
            except redis.RedisError:
                pass

    def _loop(self, broker: dramatiq.Broker) -> None:
        from sync.engine import metrics

        client = getattr(broker, "client", None)
        while True:
            try:
                if client is not None:
                    beat(client, self.worker_id)
                if self.gauges:
                    metrics.refresh_health(client)
            except Exception:  # a Redis or database blip must not end the heartbeat
                log.exception("heartbeat or gauge refresh failed")
            if self._stop.wait(INTERVAL):
                return
