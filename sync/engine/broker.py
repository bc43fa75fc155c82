"""calsync's Dramatiq broker, named by ``CALSYNC_BROKER_URL`` and built on first use.

Importing calsync never touches a host application's Dramatiq: the broker is
calsync's own object, passed explicitly to its actors, and becomes the
process-wide broker only in calsync's own worker processes (``sync.engine.workers``,
the module ``calsync worker`` and the root ``worker.py`` run).

``memory://`` is the embedded default: a StubBroker whose worker threads run
inside the calling process, so the demo and a laptop need no Redis.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import dramatiq
from dramatiq.brokers.stub import StubBroker

from sync.config import get_settings, uses_redis
from sync.errors import ConfigError

#: The queue every calsync actor uses.
QUEUE = "calsync"
#: Seconds to wait for a TCP connection to Redis before the enqueue counts as failed.
BROKER_CONNECT_TIMEOUT = 10

_lock = threading.Lock()
_broker: dramatiq.Broker | None = None


def make_broker(url: str) -> dramatiq.Broker:
    if url.startswith("memory://"):
        return StubBroker()
    if uses_redis(url):
        from dramatiq.brokers.redis import RedisBroker
        from redis.connection import parse_url

        try:
            parse_url(url)
        except ValueError:
            # redis' own message may quote part of the URL, password included.
            raise ConfigError("CALSYNC_BROKER_URL is not a Redis URL (is the port a number, the "
                              "password %-encoded?)") from None

        # A bounded connect: an unreachable broker must be reported, not waited on forever.
        return RedisBroker(url=url, socket_connect_timeout=BROKER_CONNECT_TIMEOUT)
    raise ConfigError(f"CALSYNC_BROKER_URL: unsupported scheme in {url.split('://')[0]!r}; use redis:// or memory://")


def get_broker() -> dramatiq.Broker:
    """calsync's broker for this process, built from the settings the first time it is asked for."""
    global _broker
    with _lock:
        if _broker is None:
            _broker = make_broker(get_settings().broker_url)
        return _broker


def __getattr__(name: str) -> dramatiq.Broker:
    # ``from sync.engine.broker import broker`` keeps working, lazily: the broker is built
    # when a calsync entry point asks for it, never as a side effect of an import.
    if name == "broker":
        return get_broker()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def is_embedded(broker: dramatiq.Broker) -> bool:
    return isinstance(broker, StubBroker)


@contextmanager
def embedded_worker(broker: dramatiq.Broker, threads: int) -> Iterator[None]:
    """Run worker threads in this process until the queue (and its delayed retries) drains."""
    before = list(broker.middleware)
    worker = dramatiq.Worker(broker, worker_timeout=100, worker_threads=threads)
    worker.start()
    try:
        yield
        broker.join(QUEUE, fail_fast=False)  # type: ignore[attr-defined]
        worker.join()
    finally:
        worker.stop()
        # Dramatiq's Worker registers a hook on the broker and never removes it;
        # drop it so the next embedded run does not inherit a stopped worker.
        broker.middleware[:] = [m for m in broker.middleware if m in before]
