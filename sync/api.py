"""The Python API the platform (and the CLI) calls: intake and reads.

Intake validates, stores in one transaction, then enqueues the session id.
If the enqueue is lost, the sweeper finds the session lagging and repairs it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from sync.errors import FieldError, InvalidInput, NotFound
from sync.runtime import Runtime, get_runtime
from sync.session import Session, parse_session
from sync.store import placements, sessions
from sync.store.models import Placement

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IntakeResult:
    """Per-session result: ``outcome`` is created/updated/unchanged/stale/conflict/invalid."""

    session_id: str | None
    outcome: str
    version: int | None = None
    stored_version: int | None = None
    errors: tuple[FieldError, ...] = ()
    #: False when the broker could not be reached; the sweeper delivers it later.
    queued: bool = True

    @property
    def ok(self) -> bool:
        return self.outcome in ("created", "updated", "unchanged")

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"session_id": self.session_id, "outcome": self.outcome, "version": self.version,
                             "stored_version": self.stored_version, "queued": self.queued}
        if self.errors:
            d["errors"] = [{"field": e.field, "reason": e.reason} for e in self.errors]
        return d


def _enqueue(session_id: str) -> bool:
    """Enqueue after the commit. A broker outage loses nothing: the session is
    stored and lagging, so the sweeper enqueues it once the broker is back."""
    import redis.exceptions
    from dramatiq.errors import BrokerError

    from sync.tasks import enqueue

    try:
        enqueue(session_id)
    except (BrokerError, redis.exceptions.RedisError, OSError) as exc:
        log.warning("could not enqueue %s (%s); the sweeper will pick it up", session_id, type(exc).__name__)
        return False
    return True


def upsert_session(data: dict[str, Any] | Session, *, rt: Runtime | None = None, enqueue: bool = True) -> IntakeResult:
    """Store one session from the platform and schedule its reconcile.

    Raises:
      InvalidInput: nothing is stored; the errors name each field.
    """
    rt = rt or get_runtime()
    session = data if isinstance(data, Session) else parse_session(data)
    with rt.store.tx() as db:
        saved = sessions.save(db, session)
    if saved.outcome == "conflict":
        return IntakeResult(session.id, "conflict", session.version, saved.stored_version, (FieldError(
            "version", f"version {session.version} is already stored with different content; send a higher version"),))
    queued = _enqueue(session.id) if saved.outcome in ("created", "updated") and enqueue else True
    return IntakeResult(session.id, saved.outcome, session.version, saved.stored_version, queued=queued)


def upsert_sessions(items: list[Any], *, rt: Runtime | None = None, enqueue: bool = True) -> list[IntakeResult]:
    """A batch: each element stands alone, so one bad element stores nothing of itself only."""
    results = []
    for i, item in enumerate(items):
        try:
            results.append(upsert_session(item, rt=rt, enqueue=enqueue))
        except InvalidInput as exc:
            sid = item.get("id") if isinstance(item, dict) and isinstance(item.get("id"), str) else None
            prefix = f"[{i}]." if len(items) > 1 else ""
            results.append(IntakeResult(sid, "invalid", None, None,
                                        tuple(FieldError(prefix + e.field, e.reason) for e in exc.errors)))
    return results


def cancel_session(session_id: str, *, rt: Runtime | None = None, enqueue: bool = True) -> IntakeResult:
    rt = rt or get_runtime()
    with rt.store.tx() as db:
        saved = sessions.cancel(db, session_id)
    if saved is None:
        raise NotFound(f"session {session_id!r} does not exist")
    queued = _enqueue(session_id) if saved.outcome == "updated" and enqueue else True
    return IntakeResult(session_id, saved.outcome, saved.stored_version, saved.stored_version, queued=queued)


@dataclass(frozen=True)
class SessionView:
    session: Session
    revision: int
    synced_revision: int
    placements: list[Placement] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "session": self.session.model_dump(mode="json"),
            "revision": self.revision,
            "synced_revision": self.synced_revision,
            "placements": [
                {"user_id": p.user_id, "channel": p.channel, "state": p.state, "live": p.live,
                 "recipient": p.recipient_email, "uid": p.uid, "sequence": p.sequence,
                 "external_id": p.external_id, "revision": p.revision, "attempts": p.attempts,
                 "last_error": p.last_error, "updated_at": p.updated_at.isoformat()}
                for p in self.placements
            ],
        }


def get_session(session_id: str, *, rt: Runtime | None = None) -> SessionView:
    rt = rt or get_runtime()
    with rt.store.tx() as db:
        session = sessions.load(db, session_id)
        row = sessions.row(db, session_id)
        if session is None or row is None:
            raise NotFound(f"session {session_id!r} does not exist")
        return SessionView(session, row.revision, row.synced_revision, placements.for_session(db, session_id))
