"""Client-side quotas shared by every worker process: request windows and concurrency slots.

Providers publish limits (Google: 600 requests/min per user, 10,000/min per
project; Graph: 4 concurrent and 10,000 per 10 min per mailbox). Staying under
them is cheaper than being told off with 403/429, so every provider call first
takes a slot here. The Redis backend makes the count global across processes;
the memory backend serves the embedded ``memory://`` mode.

Both backends answer "how long until a slot frees", so a caller can sleep
exactly that long instead of polling, which is what keeps bulk changes close
to the quota-bound minimum time.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

from sync.errors import Throttled


@dataclass(frozen=True)
class Window:
    """At most ``limit`` requests in any ``seconds``-long sliding window for ``key``."""

    key: str
    limit: int
    seconds: float

    @classmethod
    def guarding(cls, key: str, limit: int, provider_seconds: float) -> Window:
        """A window a little longer than the provider's.

        We count a request when it leaves; the provider counts it when it
        arrives. A slot reused exactly one window later can reach the provider
        before the old request's arrival has aged out, and earn a 403/429. The
        margin (1%, at least 250 ms) absorbs that travel time.
        """
        return cls(key, limit, provider_seconds + max(0.25, provider_seconds * 0.01))


class QuotaBackend(Protocol):
    def take(self, windows: Sequence[Window]) -> float:
        """Take one request from every window at once, or none: returns 0, or seconds to wait."""

    def enter(self, key: str, limit: int, ttl: float) -> str | None:
        """Take a concurrency slot; a token to give back, or None when all are held."""

    def leave(self, key: str, token: str) -> None: ...


_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local wait = 0
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[2 * i])
  local window = tonumber(ARGV[2 * i + 1])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  local count = redis.call('ZCARD', key)
  if count >= limit then
    local oldest = redis.call('ZRANGE', key, count - limit, count - limit, 'WITHSCORES')
    local w = tonumber(oldest[2]) + window - now
    if w > wait then wait = w end
  end
end
if wait > 0 then return wait end
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, now, ARGV[1] .. ':' .. i)
  redis.call('PEXPIRE', key, tonumber(ARGV[2 * i + 1]))
end
return 0
"""

_ENTER = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
return 1
"""


class RedisQuota:
    """Quotas in Redis: one Lua call per acquisition, timed by the Redis server's clock."""

    def __init__(self, client: object, prefix: str = "calsync:quota:") -> None:
        self.client = client
        self.prefix = prefix
        self._take = client.register_script(_TAKE)  # type: ignore[attr-defined]
        self._enter = client.register_script(_ENTER)  # type: ignore[attr-defined]

    def take(self, windows: Sequence[Window]) -> float:
        args: list[object] = [uuid.uuid4().hex]
        for w in windows:
            args += [w.limit, int(w.seconds * 1000)]
        wait_ms = self._take(keys=[self.prefix + w.key for w in windows], args=args)
        return int(wait_ms) / 1000

    def enter(self, key: str, limit: int, ttl: float) -> str | None:
        token = uuid.uuid4().hex
        ok = self._enter(keys=[self.prefix + "slots:" + key], args=[token, limit, int(ttl * 1000)])
        return token if ok else None

    def leave(self, key: str, token: str) -> None:
        self.client.zrem(self.prefix + "slots:" + key, token)  # type: ignore[attr-defined]


class MemoryQuota:
    """The same semantics within one process, for the embedded mode and unit tests."""

    def __init__(self, clock=time.monotonic) -> None:  # type: ignore[no-untyped-def]
        self.clock = clock
        self._lock = threading.Lock()
        self._log: dict[str, deque[float]] = {}
        self._slots: dict[str, dict[str, float]] = {}

    def take(self, windows: Sequence[Window]) -> float:
        with self._lock:
            now = self.clock()
            wait = 0.0
            for w in windows:
                log = self._log.setdefault(w.key, deque())
                while log and log[0] <= now - w.seconds:
                    log.popleft()
                if len(log) >= w.limit:
                    wait = max(wait, log[len(log) - w.limit] + w.seconds - now)
            if wait > 0:
                return wait
            for w in windows:
                self._log[w.key].append(now)
            return 0.0

    def enter(self, key: str, limit: int, ttl: float) -> str | None:
        with self._lock:
            now = self.clock()
            held = {t: exp for t, exp in self._slots.get(key, {}).items() if exp > now}
            self._slots[key] = held
            if len(held) >= limit:
                return None
            token = uuid.uuid4().hex
            held[token] = now + ttl
            return token

    def leave(self, key: str, token: str) -> None:
        with self._lock:
            self._slots.get(key, {}).pop(token, None)


#: Longest a worker thread sleeps for quota before handing the message back to the queue, in seconds.
MAX_INLINE_WAIT = 5.0
#: How often a full concurrency slot is re-tried, in seconds.
SLOT_POLL = 0.02


def acquire(backend: QuotaBackend, windows: Sequence[Window], *, max_wait: float | None = None) -> None:
    """Block until every window has room; raise Throttled if that would take longer than ``max_wait``.

    By default a thread waits up to one window (at least MAX_INLINE_WAIT): a
    slot is certain to free within it, and handing the message back to the
    queue instead would only add the broker's delay on top.
    """
    if max_wait is None:
        max_wait = max(MAX_INLINE_WAIT, max(w.seconds for w in windows))
    deadline = time.monotonic() + max_wait
    while True:
        wait = backend.take(windows)
        if wait <= 0:
            return
        if time.monotonic() + wait > deadline:
            raise Throttled(f"client-side quota spent for {windows[0].key}", retry_after=wait)
        time.sleep(wait)


@contextmanager
def slot(backend: QuotaBackend, key: str, limit: int, *, ttl: float = 120.0,
         max_wait: float = MAX_INLINE_WAIT) -> Iterator[None]:
    """Hold one of ``limit`` concurrent slots for ``key`` (expires after ``ttl`` if a worker dies)."""
    deadline = time.monotonic() + max_wait
    while (token := backend.enter(key, limit, ttl)) is None:
        if time.monotonic() > deadline:
            raise Throttled(f"all {limit} concurrent slots for {key} are busy", retry_after=SLOT_POLL * 10)
        time.sleep(SLOT_POLL)
    try:
        yield
    finally:
        backend.leave(key, token)
