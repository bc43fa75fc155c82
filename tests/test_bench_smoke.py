"""The Google bulk benchmark still runs end to end (tiny numbers; it measures, this only checks it ran)."""

from __future__ import annotations

import io
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `bench` lives next to `sync`, which is installed; `bench` is not
    sys.path.insert(0, str(ROOT))

from bench import google_bulk  # noqa: E402


def test_quota_bound_formula():
    # 250 requests at 100 per 10 s window: 100 at t=0, 100 at t=10, the last 50 at t=20
    assert google_bulk.window_bound(250, 100, 10) == 20
    assert google_bulk.window_bound(100, 100, 10) == 0
    assert google_bulk.window_bound(101, 100, 10) == 10
    # 1600 over 8 accounts: 200 each (per-user bound 10 s), 1600 at 400/project (30 s) binds
    assert google_bulk.quota_bound(1600, 8, 100, 400, 10) == (30, 10, 30)


def test_bench_runs_and_prints_its_figures():
    out = io.StringIO()
    rc = google_bulk.main(["--placements", "10", "--accounts", "2", "--workers", "4", "--window", "1",
                           "--per-user", "3", "--per-project", "5", "--quota", "memory", "--retry-min-ms", "100"],
                          out=out)
    text = out.getvalue()
    assert rc == 0, text
    assert "command: " in text and "environment: " in text and "scaling: " in text
    assert "N = 10 placements (5 sessions x 2 Google accounts)" in text
    assert "quota-bound minimum for N writes: 1.00 s" in text
    for phase in ("== phase 1 (create)", "== phase 2 (bulk reschedule, measured)"):
        assert phase in text
    assert text.count("calls per changed placement: ") == 2
    assert text.count("measured / quota bound: ") == 2
    assert text.count("403/429 answers received: ") == 2
    assert "ERROR" not in text and "CRASHES" not in text
    assert "email channel calls: 0" in text
