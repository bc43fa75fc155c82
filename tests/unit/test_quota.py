"""Client-side quotas: the same semantics in memory and in Redis, and what waiting costs."""

from __future__ import annotations

import threading
import time

import pytest
import redis

from sync import api
from sync.engine.runtime import Runtime
from sync.errors import Throttled
from sync.quota import MemoryQuota, RedisQuota, Window, acquire, slot
from sync.store.db import Store
from sync.testing.channel import MemoryChannel
from tests.support.factories import make_settings, reconcile_due, session_data
from tests.support.services import REDIS_URL, require_service


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def backend(request):
    if request.param == "memory":
        yield MemoryQuota()
        return
    client = redis.Redis.from_url(REDIS_URL)
    require_service("Redis", client.ping)
    prefix = f"calsync:test:{time.monotonic_ns()}:"
    yield RedisQuota(client, prefix=prefix)
    for key in client.scan_iter(prefix + "*"):
        client.delete(key)


def test_window_admits_limit_then_says_how_long_to_wait(backend):
    w = [Window("acct", 3, 0.5)]
    assert [backend.take(w) for _ in range(3)] == [0, 0, 0]
    wait = backend.take(w)
    assert 0 < wait <= 0.5
    time.sleep(wait + 0.02)
    assert backend.take(w) == 0


def test_windows_are_taken_together_or_not_at_all(backend):
    # Given the project window is full but the account window is not
    project = Window("project", 1, 5)
    assert backend.take([Window("a", 10, 5), project]) == 0
    # When another account asks, it is refused...
    assert backend.take([Window("b", 10, 5), project]) > 0
    # ...and its own window was not charged for the refused request
    assert [backend.take([Window("b", 1, 5)]) for _ in range(2)][0] == 0


def test_concurrency_slots_are_limited_and_returned(backend):
    tokens = [backend.enter("mbox", 2, 5) for _ in range(3)]
    assert tokens[2] is None and None not in tokens[:2]
    backend.leave("mbox", tokens[0])
    assert backend.enter("mbox", 2, 5) is not None


def test_acquire_waits_briefly_but_hands_back_long_waits_as_throttled():
    q = MemoryQuota()
    w = [Window("acct", 1, 0.2)]
    acquire(q, w)
    started = time.monotonic()
    acquire(q, w, max_wait=1)  # waits ~0.2 s inline
    assert 0.1 < time.monotonic() - started < 0.6
    acquire(q, [Window("acct2", 1, 60)])
    with pytest.raises(Throttled) as exc:
        acquire(q, [Window("acct2", 1, 60)], max_wait=1)
    assert exc.value.retry_after and exc.value.retry_after > 50


def test_slot_never_lets_more_than_limit_run_at_once():
    q = MemoryQuota()
    running, peak, lock = [0], [0], threading.Lock()

    def work():
        with slot(q, "mbox", 2):
            with lock:
                running[0] += 1
                peak[0] = max(peak[0], running[0])
            time.sleep(0.05)
            with lock:
                running[0] -= 1

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak[0] == 2


def test_waiting_for_quota_costs_no_placement_attempt(sqlite_url):
    # Given a channel that finds our own quota spent three times in a row
    channel = MemoryChannel()
    channel.fail_with = [Throttled("quota", retry_after=2.0)] * 3
    rt = Runtime(make_settings(sqlite_url, max_attempts=2), Store(sqlite_url),
                 channels=lambda s, st: {"email": channel})
    api.upsert_session(session_data(participants=session_data()["participants"][:1]), rt=rt, enqueue=False)
    # When the worker keeps coming back
    reports = [reconcile_due(rt, "sess-42") for _ in range(4)]
    # Then it was asked to wait as long as the quota said, and the placement never failed
    assert all(r.retry_in_ms == 2000 for r in reports[:3])
    [placement] = api.get_session("sess-42", rt=rt).placements
    assert (placement.state, placement.attempts) == ("placed", 0)
