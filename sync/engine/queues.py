"""Dramatiq's Redis key layout, in one place, and the counters read from it.

Dramatiq's Redis broker keeps, per queue ``q`` in namespace ``ns`` (its
``brokers/redis/dispatch.lua``):

- ``ns:q`` — a list of the Redis message ids waiting to be fetched;
- ``ns:q.msgs`` — every payload queued or fetched but not yet acked;
- ``ns:q.DQ`` / ``ns:q.DQ.msgs`` — the delay queue (retries, scheduled sends);
- ``ns:q.XQ`` / ``ns:q.XQ.msgs`` — dead letters: a sorted set scored by death
  time in ms, and their payloads.

The health gauges (engine), ``calsync status``, the dead-letter tool and the
resync progress follower (ops) all read these keys; they name them through
:class:`QueueKeys` so the layout is written down once. It lives in the engine,
not ops, because a worker's own gauges read it.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis
from dramatiq.common import dq_name, xq_name

from sync.config import Settings, uses_redis
from sync.engine.broker import QUEUE

#: Seconds before a CLI gives up on Redis: an operator waits on it, a worker does not.
REDIS_TIMEOUT = 3.0
#: Dramatiq's default namespace, which calsync's broker keeps.
NAMESPACE = "dramatiq"


@dataclass(frozen=True)
class QueueKeys:
    """The Redis keys of one Dramatiq queue."""

    queue: str = QUEUE
    namespace: str = NAMESPACE

    @property
    def waiting(self) -> str:
        return f"{self.namespace}:{self.queue}"

    @property
    def payloads(self) -> str:
        return f"{self.waiting}.msgs"

    @property
    def delay_queue(self) -> str:
        """The name Dramatiq gives the queue's delayed messages (a message's ``queue_name`` there)."""
        return dq_name(self.queue)

    @property
    def delayed_payloads(self) -> str:
        return f"{self.namespace}:{self.delay_queue}.msgs"

    @property
    def dead(self) -> str:
        return f"{self.namespace}:{xq_name(self.queue)}"

    @property
    def dead_payloads(self) -> str:
        return f"{self.dead}.msgs"


#: The keys of calsync's own queue.
KEYS = QueueKeys()


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


def queue_stats(client: redis.Redis, keys: QueueKeys = KEYS) -> QueueStats:
    """One round trip."""
    pipe = client.pipeline(transaction=False)
    pipe.llen(keys.waiting)
    pipe.hlen(keys.payloads)
    pipe.hlen(keys.delayed_payloads)
    pipe.zcard(keys.dead)
    queued, payloads, delayed, dead = pipe.execute()
    return QueueStats(keys.queue, queued, max(0, payloads - queued), delayed, dead)


def broker_client(settings: Settings) -> redis.Redis | None:
    """A Redis client for the broker URL with short timeouts; None for the embedded ``memory://``.

    Built here rather than taken from the installed Dramatiq broker so a
    command that only reads counters never waits on the worker's long timeouts.
    The URL's scheme was checked when the settings loaded.
    """
    if not uses_redis(settings.broker_url):
        return None
    return redis.Redis.from_url(settings.broker_url, socket_connect_timeout=REDIS_TIMEOUT,
                                socket_timeout=REDIS_TIMEOUT)
