"""End to end through real Redis: the CLI takes a session in, a worker process mails the invites."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from sync import api
from sync.engine.runtime import Runtime
from sync.store.db import Store
from tests.support.factories import make_settings, session_data
from tests.support.services import REDIS_URL, require_service
from tests.support.smtpserver import SmtpServer, free_port

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.redis


@pytest.fixture
def env(tmp_path: Path):
    client = redis.Redis.from_url(REDIS_URL)
    require_service("Redis", client.ping)
    client.flushdb()
    with SmtpServer() as smtp:
        environment = {
            **os.environ,
            "CALSYNC_DATABASE_URL": f"sqlite:///{tmp_path / 'e2e.db'}",
            "CALSYNC_BROKER_URL": REDIS_URL,
            "CALSYNC_SMTP_URL": smtp.url,
            "CALSYNC_MAIL_FROM": "sessions@calsync.example",
            "CALSYNC_SWEEP_INTERVAL_SECONDS": "1",
            "CALSYNC_PAST_SESSIONS": "send",
            "CALSYNC_METRICS_PORT": str(free_port()),
            "PYTHONPATH": str(ROOT),
        }
        yield environment, smtp
    client.flushdb()


def calsync(env: dict, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sync.cli", *args], env=env, cwd=ROOT, input=stdin,
                          capture_output=True, timeout=120)


def wait_for(predicate, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def test_upsert_then_worker_delivers_invites(env, tmp_path: Path):
    environment, smtp = env
    # Given a migrated database and a session file
    assert calsync(environment, "db", "upgrade").returncode == 0
    path = tmp_path / "session.json"
    path.write_text(json.dumps(session_data()))
    # When the platform pushes it in through the CLI (the worker is not running yet)
    result = calsync(environment, "sessions", "upsert", str(path))
    assert result.returncode == 0, result.stderr.decode()
    # And a worker process starts
    worker = subprocess.Popen([sys.executable, "-m", "sync.cli", "worker", "--processes", "1", "--threads", "2"],
                              env=environment, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        # Then both participants receive their invite over SMTP
        assert wait_for(lambda: len(smtp.mailbox.messages) >= 2), worker_output(worker)
        # And `sessions show` reports both placements as placed
        assert wait_for(lambda: placed_count(environment) == 2)
        # When the session changes but its message is lost (stored without an enqueue)
        url = environment["CALSYNC_DATABASE_URL"]
        moved = session_data(version=2, start="2026-12-01T17:00:00-05:00", end="2026-12-01T18:00:00-05:00")
        assert api.upsert_session(moved, rt=Runtime(make_settings(url), Store(url)), enqueue=False).ok
        # Then the periodic sweeper finds it lagging and the update still goes out
        assert wait_for(lambda: len(smtp.mailbox.messages) >= 4), worker_output(worker)
        # And the workers' metrics endpoint counts the two invites and the two updates
        counted = 'action="create",channel="email",outcome="ok"} 2.0'
        assert wait_for(lambda: counted in metrics(environment)), metrics(environment)
        assert 'action="update",channel="email",outcome="ok"} 2.0' in metrics(environment)
        # And its health gauges, refreshed on the worker's heartbeat, show the placements
        gauge = 'calsync_placements{channel="email",state="placed"} 2.0'
        assert wait_for(lambda: gauge in metrics(environment, "calsync_placements")), metrics(environment, "calsync")
        # And `status` sees the worker alive
        report = json.loads(calsync(environment, "status", "--json").stdout)
        assert report["workers"]["alive"] >= 1
    finally:
        worker.terminate()
        worker.wait(30)


def placed_count(environment: dict) -> int:
    out = calsync(environment, "sessions", "show", "sess-42", "--json")
    if out.returncode != 0:
        return 0
    return sum(p["state"] == "placed" for p in json.loads(out.stdout)["placements"])


def worker_output(worker: subprocess.Popen) -> str:
    worker.terminate()
    out, _ = worker.communicate(timeout=30)
    return out.decode(errors="replace")[-3000:]


def metrics(environment: dict, prefix: str = "calsync_placement_actions_total") -> str:
    import requests

    try:
        url = f"http://127.0.0.1:{environment['CALSYNC_METRICS_PORT']}/"
        text = requests.get(url, timeout=2).text
    except requests.RequestException:
        return ""
    return "\n".join(line for line in text.splitlines() if line.startswith(prefix))
