"""Test-only building blocks: the contract's example session and settings (the in-memory channel is
:class:`sync.testing.channel.MemoryChannel`)."""

from __future__ import annotations

from typing import Any

from sync.config import Settings


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
