"""Test-only building blocks: the contract's example session, settings, a recording channel."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sync.config import Settings
from sync.core.render import RenderedEvent
from sync.providers.channel import Receipt, Target


class RecordingChannel:
    """Test-only channel: remembers every call and can be told to fail.

    ``copies`` models the far side: what each person currently holds.
    """

    def __init__(self, name: str = "email") -> None:
        self.name = name
        self.calls: list[tuple[str, str, int, RenderedEvent]] = []
        self.copies: dict[str, RenderedEvent] = {}
        self.fail_with: list[Exception] = []
        self.before: Callable[[str, Target], None] | None = None

    def _act(self, op: str, target: Target, event: RenderedEvent) -> Receipt:
        if self.before:
            self.before(op, target)
        if self.fail_with:
            raise self.fail_with.pop(0)
        self.calls.append((op, event.recipient.user_id, target.sequence, event))
        if op == "place":
            self.copies[event.recipient.user_id] = event
        else:
            self.copies.pop(event.recipient.user_id, None)
        return Receipt(external_id=f"{self.name}-{target.placement_id}")

    def place(self, target: Target, event: RenderedEvent) -> Receipt:
        return self._act("place", target, event)

    def withdraw(self, target: Target, event: RenderedEvent) -> Receipt:
        return self._act("withdraw", target, event)

    def ops(self) -> list[tuple[str, str, int]]:
        return [(op, uid, seq) for op, uid, seq, _ in self.calls]


def make_settings(db_url: str, **overrides: Any) -> Settings:
    base: dict[str, Any] = dict(database_url=db_url, broker_url="memory://", mail_from="sessions@calsync.example",
                                smtp_url="file:///nonexistent", retry_min_backoff_ms=10, retry_max_backoff_ms=50,
                                max_attempts=3, sweep_interval_seconds=0,
                                # The contract's example session may already be over when the suite runs.
                                past_sessions="send")
    base.update(overrides)
    return Settings(**base)


def session_data(**overrides: Any) -> dict[str, Any]:
    """The contract's example session; overrides replace top-level fields."""
    data: dict[str, Any] = {
        "id": "sess-42",
        "version": 1,
        "title": "Session 2: Setting goals",
        "program": "Spring Cohort",
        "start": "2026-12-01T15:00:00-05:00",
        "end": "2026-12-01T16:00:00-05:00",
        "timezone": "America/New_York",
        "status": "scheduled",
        "meeting_url": "https://zoom.us/j/123456789",
        "location": None,
        "agenda_html": "<p>Review the mentorship agreement</p>",
        "view_url": "https://platform.example/sessions/sess-42",
        "participants": [
            {"user_id": "u-1", "email": "mentor@example.com", "name": "Ada Lovelace", "role": "mentor"},
            {"user_id": "u-2", "email": "mentee@example.com", "name": "Alan Turing", "role": "mentee",
             "timezone": "Europe/London"},
        ],
    }
    data.update(overrides)
    return data




def make_retries_due(rt: Any, session_id: str) -> None:
    """Time passes: every retry the session's placements scheduled is due now."""
    from datetime import timedelta

    from sqlalchemy import update

    from sync.store.db import utcnow
    from sync.store.models import Placement

    with rt.store.tx() as db:
        db.execute(update(Placement).where(Placement.session_id == session_id, Placement.next_attempt_at.is_not(None))
                   .values(next_attempt_at=utcnow() - timedelta(seconds=1)))


def reconcile_due(rt: Any, session_id: str, **kwargs: Any) -> Any:
    """Reconcile as the scheduled retry message does: once its delay has passed."""
    from sync.engine.reconcile import reconcile

    make_retries_due(rt, session_id)
    return reconcile(rt, session_id, **kwargs)
