"""Worker heartbeats and the health gauges: `status` notices a queue nobody works on."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import redis
from prometheus_client import REGISTRY

from sync import api
from sync.engine.heartbeat import STALE_AFTER, beat, workers_seen
from sync.engine.queues import QueueStats
from sync.engine.reconcile import reconcile
from sync.engine.runtime import Runtime, set_runtime
from sync.ops.status import Workers, find_problems
from sync.store.db import Store
from sync.store.stats import Lagging, StoreStats
from sync.testing.channel import MemoryChannel
from tests.support.cli import cli_env, upgraded_runner
from tests.support.factories import make_settings, session_data
from tests.support.services import REDIS_URL

pytestmark = [pytest.mark.redis]


def test_a_backlog_with_no_worker_seen_is_a_problem_and_with_one_it_is_not():
    # Given 300 messages waiting and a quiet store
    queue = QueueStats("calsync", queued=300, in_flight=0, delayed=0, dead_letters=0)
    store = StoreStats([], 0, [], Lagging(0))
    # Then with no worker seen for two minutes it is a problem naming what to do
    [problem] = find_problems(queue, store, workers=Workers(alive=0, last_seen_seconds=120))
    assert "300 message(s) queued" in problem and "calsync worker" in problem and "2m" in problem
    # And with a worker alive it is only a backlog
    assert find_problems(queue, store, workers=Workers(alive=1, last_seen_seconds=3)) == []


def test_heartbeats_count_live_workers_and_forget_stale_ones(redis_client: redis.Redis):
    # Given one worker that beat just now and one that stopped two minutes ago
    now = time.time()
    beat(redis_client, "host:1", now=now)
    beat(redis_client, "host:2", now=now - 2 * STALE_AFTER)
    # Then one is alive, and the last beat was just now
    alive, last = workers_seen(redis_client, now=now)
    assert alive == 1 and last is not None and last < 1


def test_status_exits_1_when_messages_wait_and_no_worker_runs(tmp_path: Path, redis_client: redis.Redis):
    # Given sessions pushed onto the Redis queue and no worker running
    env = cli_env(tmp_path, CALSYNC_BROKER_URL=REDIS_URL)
    run = upgraded_runner(env, tmp_path)
    batch = [session_data(id=f"s-{i}") for i in range(3)]
    assert run("sessions", "upsert", "-", stdin=json.dumps(batch).encode()).returncode == 0
    # When status is asked for
    result = run("status", "--json")
    # Then it says nobody is working the queue, and exits 1
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["workers"] == {"alive": 0, "last_seen_seconds": None}
    assert any("no worker is running" in p for p in report["problems"])
    # When a worker's heartbeat is seen
    beat(redis_client, "host:1")
    # Then the same backlog is not a problem
    assert run("status").returncode == 0


def test_health_gauges_follow_the_store(sqlite_url: str, redis_client: redis.Redis):
    from sync.engine.metrics import refresh_health

    # Given a settled session and one placement whose channel fails for good
    channel = MemoryChannel()
    rt = Runtime(make_settings(sqlite_url), Store(sqlite_url), channels=lambda s, st: {"email": channel})
    from sync.errors import PermanentError

    channel.fail_with = [PermanentError("550 no such mailbox")]
    api.upsert_session(session_data(), rt=rt, enqueue=False)
    reconcile(rt, "sess-42")
    set_runtime(rt)
    try:
        # When a worker refreshes its gauges
        refresh_health(redis_client)
    finally:
        set_runtime(None)

    # Then they show the placements by state and the empty queue
    def value(name: str, **labels: str) -> float | None:
        return REGISTRY.get_sample_value(name, labels)

    assert value("calsync_placements", state="placed", channel="email") == 1
    assert value("calsync_placements", state="failed", channel="email") == 1
    assert value("calsync_placements", state="held", channel="google") == 0
    assert value("calsync_queue_backlog", state="queued") == 0
    assert value("calsync_integrations_needing_reconnect") == 0
    assert value("calsync_oldest_lagging_session_seconds") == 0
