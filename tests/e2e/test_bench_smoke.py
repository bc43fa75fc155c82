"""The bulk benchmarks still run end to end (tiny numbers; they measure, this only checks they ran)."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `bench` lives next to `sync`, which is installed; `bench` is not
    sys.path.insert(0, str(ROOT))

from bench import google_bulk, harness, outlook_bulk  # noqa: E402

PHASES = ("== phase 1 (create)", "== phase 2 (bulk reschedule, measured)")


def test_quota_bound_formulas():
    # 250 requests at 100 per 10 s window: 100 at t=0, 100 at t=10, the last 50 at t=20
    assert harness.window_bound(250, 100, 10) == 20
    assert harness.window_bound(100, 100, 10) == 0
    assert harness.window_bound(101, 100, 10) == 10
    # Google: 1600 over 8 accounts: 200 each (per-user bound 10 s), 1600 at 400/project (30 s) binds
    assert google_bulk.quota_bound(1600, 8, 100, 400, 10) == (30, 10, 30)
    # Outlook: the busiest mailbox binds; 800 writes at 200 per 10 s -> 30 s, at 4 x 5 ms -> 1 s
    assert outlook_bulk.mailbox_bound([800, 300], 200, 10, 4, 0.005) == (30, 30, 1)
    # ... unless the answers are slow: 800 x 0.2 s / 4 = 40 s
    assert outlook_bulk.mailbox_bound([800], 200, 10, 4, 0.2) == (40, 30, 40)


TINY = {  # a second or two per phase; the windows are short so the waits are too
    google_bulk: ["--placements", "10", "--accounts", "2", "--window", "1", "--per-user", "3", "--per-project", "5"],
    outlook_bulk: ["--placements", "8", "--accounts", "2", "--window", "0.5", "--per-mailbox", "3",
                   "--latency-ms", "2"],
}
EXPECTED = {
    google_bulk: ["N = 10 placements (5 sessions x 2 Google accounts)",
                  "quota-bound minimum for N writes: 1.00 s = max(per-user 1.00 s, per-project 1.00 s)",
                  "403/429 answers received: "],
    outlook_bulk: ["N = 8 placements (4 sessions x 2 Outlook mailboxes)",
                   "quota-bound minimum for N writes: 0.50 s = max(mailbox window 0.50 s, concurrency 0.00 s)",
                   "429 answers received: ", "max in flight per mailbox: ", "Graph requests of any kind: "],
}


@pytest.mark.parametrize("bench", [google_bulk, outlook_bulk], ids=["google", "outlook"])
def test_bench_runs_and_prints_its_figures(bench):
    out = io.StringIO()
    rc = bench.main(TINY[bench] + ["--workers", "4", "--quota", "memory", "--retry-min-ms", "100"], out=out)
    text = out.getvalue()
    assert rc == 0, text
    assert "command: " in text and "environment: " in text and "scaling: " in text
    for phase in PHASES:
        assert phase in text
    for figure in ("wall time, ", "measured / quota bound: ", "calls per changed placement: ", "reconciles run: "):
        assert text.count(figure) == 2, figure
    assert text.count(EXPECTED[bench][0]) == 1 and text.count(EXPECTED[bench][1]) == 1
    for per_phase in EXPECTED[bench][2:]:
        assert text.count(per_phase) == 2, per_phase
    assert "ERROR" not in text and "CRASHES" not in text
    assert "email channel calls: 0" in text and "emulator internal errors: 0" in text


@pytest.mark.postgres
@pytest.mark.redis
def test_http_intake_bench_runs_and_prints_its_figures(redis_client):
    """`calsync serve` and `calsync worker` as processes on PostgreSQL and Redis, a second of each phase."""
    from sqlalchemy import create_engine

    from bench import http_intake
    from tests.support.services import POSTGRES_URL, REDIS_URL, require_service

    engine = create_engine(POSTGRES_URL)
    require_service("PostgreSQL", lambda: engine.connect().close())
    engine.dispose()
    out = io.StringIO()
    rc = http_intake.main(["--db-url", POSTGRES_URL, "--redis-url", REDIS_URL, "--rate", "20", "--seconds", "0.5",
                           "--e2e-rate", "5", "--e2e-seconds", "0.6", "--provider-latency-ms", "5",
                           "--client-threads", "4", "--settle-seconds", "30"], out=out)
    text = out.getvalue()
    assert rc == 0, text
    assert "command: " in text and "environment: " in text
    assert "answers: {202: 10}" in text and "PUT answers: {202: 3}; events seen: 3 of 3" in text
    for figure in ("throughput achieved: ", "latency from when each PUT was due: p50 ", "[aim p99 <= 50 ms]",
                   "emulator requests per session: 1.00", "PUT due -> event on the calendar", "ratios (this run): "):
        assert figure in text, figure
    assert "ERROR" not in text
