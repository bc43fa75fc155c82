"""A Hypothesis state machine over the whole email pipeline (after vdirsyncer's SyncMachine).

Random bookings, reschedules, edits, participant changes, cancellations,
stale and duplicate deliveries, and worker crashes between send and commit.
After draining, every person's calendar app shows exactly the session as it
stands now, no invite is left un-cancelled, and SEQUENCE never went down.
"""

from __future__ import annotations

import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from factories import make_settings, session_data
from mailclient import AppTransport, CalendarApp, SimulatedCrash
from sync import api
from sync.email_fallback import EmailChannel
from sync.reconcile import reconcile
from sync.runtime import Runtime
from sync.store.db import Store
from sync.store.migrate import upgrade

POOL = [(f"u-{i}", f"person{i}@example.com") for i in range(5)]
BASE = datetime(2026, 12, 1, 15, 0, tzinfo=timezone.utc)


class PipelineMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.TemporaryDirectory()
        url = f"sqlite:///{Path(self.tmp.name) / 'c.db'}"
        upgrade(url)
        self.app = CalendarApp()
        self.transport = AppTransport(self.app)
        store = Store(url)
        self.rt = Runtime(make_settings(url, max_attempts=50), store,
                          channels=lambda s, st_: {"email": EmailChannel(st_, self.transport, s.mail_from)})
        self.version = 0
        self.current: dict | None = None

    def teardown(self) -> None:
        self.rt.store.engine.dispose()
        self.tmp.cleanup()

    def _push(self, data: dict) -> None:
        self.version += 1
        data = {**data, "version": self.version}
        assert api.upsert_session(data, rt=self.rt, enqueue=False).ok
        self.current = data

    @rule(hours=st.integers(0, 48), members=st.sets(st.sampled_from(POOL), min_size=1, max_size=4))
    def book_or_reshape(self, hours: int, members: set) -> None:
        start = BASE + timedelta(hours=hours)
        parts = [{"user_id": u, "email": e, "name": u.upper()} for u, e in sorted(members)]
        self._push(session_data(start=start.isoformat(), end=(start + timedelta(hours=1)).isoformat(),
                                participants=parts))

    @precondition(lambda self: self.current is not None)
    @rule(agenda=st.sampled_from(["<p>Goals</p>", "<p>Review</p>", "<ul><li>a</li></ul>"]),
          place=st.sampled_from([None, "Room 4"]))
    def edit(self, agenda: str, place: str | None) -> None:
        assert self.current is not None
        self._push({**self.current, "agenda_html": agenda, "location": place})

    @precondition(lambda self: self.current is not None)
    @rule()
    def cancel(self) -> None:
        assert self.current is not None
        self._push({**self.current, "status": "cancelled"})

    @precondition(lambda self: self.current is not None and self.version > 1)
    @rule()
    def stale_delivery(self) -> None:
        assert self.current is not None
        old = {**self.current, "version": self.version - 1, "title": "Stale"}
        assert api.upsert_session(old, rt=self.rt, enqueue=False).outcome == "stale"

    @precondition(lambda self: self.current is not None)
    @rule(times=st.integers(1, 2))
    def deliver(self, times: int) -> None:
        for _ in range(times):
            reconcile(self.rt, "sess-42")

    @precondition(lambda self: self.current is not None)
    @rule()
    def crash_between_send_and_commit(self) -> None:
        self.transport.crash_after_send = 1
        try:
            reconcile(self.rt, "sess-42")
        except SimulatedCrash:
            pass
        self.transport.crash_after_send = 0

    @invariant()
    def sequence_never_goes_down(self) -> None:
        assert self.app.sequence_went_down == []

    def check_converged(self) -> None:
        for _ in range(5):
            if reconcile(self.rt, "sess-42").retry_in_ms is None:
                break
        assert self.current is not None
        members = {p["email"] for p in self.current["participants"]}
        scheduled = self.current["status"] == "scheduled"
        start = datetime.fromisoformat(self.current["start"]).astimezone(timezone.utc)
        for _, address in POOL:
            showing = self.app.showing(address)
            if scheduled and address in members:
                assert len(showing) == 1, (address, showing)
                assert showing[0].start == start
                assert ("Room 4" in showing[0].location) == (self.current.get("location") == "Room 4")
            else:
                assert showing == [], (address, showing)

    @precondition(lambda self: self.current is not None)
    @rule()
    def drain_and_check(self) -> None:
        self.check_converged()


PipelineMachine.TestCase.settings = settings(
    max_examples=40, stateful_step_count=20, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestPipeline = PipelineMachine.TestCase
