"""The Python API the platform (and the CLI) calls: intake and reads.

Intake validates, stores in one transaction, then enqueues the session id.
If the enqueue is lost, the sweeper finds the session lagging and repairs it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from sync.core.session import Session, SessionLike, as_model, parse_session
from sync.engine.runtime import Runtime, get_runtime
from sync.errors import FieldError, InvalidInput, NotFound
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
    #: True when its reconcile was enqueued; False when that was needed but the broker
    #: could not be reached (it is stored and lagging: the sweeper enqueues it later);
    #: None when nothing needed enqueueing (unchanged, stale, conflict, invalid).
    queued: bool | None = None

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

    from sync.engine.tasks import enqueue

    try:
        enqueue(session_id)
    except (BrokerError, redis.exceptions.RedisError, OSError) as exc:
        log.warning("could not enqueue %s (%s); the sweeper will pick it up", session_id, type(exc).__name__)
        return False
    return True


def _check_organizer_not_invited(session: Session, organizer: str | None) -> None:
    """Refuse a participant at the organizer's own address (CALSYNC_MAIL_FROM).

    Emailed invites come from that address as their ORGANIZER, and an invite
    cannot be sent to its own organizer: rejecting it here names the field,
    instead of the placement failing later. Without a configured address (intake
    needs no mail settings) there is nothing to compare against.

    Raises:
      InvalidInput: naming ``participants[i].email``.
    """
    if not organizer or not organizer.strip():
        return
    address = organizer.strip().lower()
    errors = [FieldError(f"participants[{i}].email",
                         f"{p.email!r} is the organizer address (CALSYNC_MAIL_FROM); it cannot be invited")
              for i, p in enumerate(session.participants) if p.email.strip().lower() == address]
    if errors:
        raise InvalidInput(errors)


def upsert_session(data: dict[str, Any] | Session, *, rt: Runtime | None = None, enqueue: bool = True) -> IntakeResult:
    """Store one session from the platform and schedule its reconcile.

    Raises:
      InvalidInput: nothing is stored; the errors name each field.
      sqlalchemy.exc.SQLAlchemyError: the store failed; its transaction rolled back.
    """
    rt = rt or get_runtime()
    session = data if isinstance(data, Session) else parse_session(data)
    _check_organizer_not_invited(session, rt.settings.mail_from)
    with rt.store.tx() as db:
        saved = sessions.save(db, session)
    if saved.outcome == "conflict":
        return IntakeResult(session.id, "conflict", session.version, saved.stored_version, (FieldError(
            "version", f"version {session.version} is already stored with different content; send a higher version"),))
    queued = _enqueue(session.id) if saved.outcome in ("created", "updated") and enqueue else None
    return IntakeResult(session.id, saved.outcome, session.version, saved.stored_version, queued=queued)


def _item_id(item: Any) -> str | None:
    """The id an element claims, for reporting it even when it did not validate."""
    sid = item.get("id") if isinstance(item, dict) else getattr(item, "id", None)
    return sid if isinstance(sid, str) else None


def _one_line(exc: Exception) -> str:
    """A failure as one short line for the platform.

    For a database error this is the driver's own first line only: SQLAlchemy's
    full message goes on with the SQL and its parameters, i.e. the session's data.
    """
    cause = getattr(exc, "orig", None) or exc
    first = next((line.strip() for line in str(cause).splitlines() if line.strip()), "")
    reason = f"{type(cause).__name__}: {first}" if first else type(cause).__name__
    return reason if len(reason) <= 300 else reason[:299] + "…"


def _failed(i: int, item: Any, exc: Exception, prefix: str) -> IntakeResult:
    """The "error" result of an element that could not be stored, logged for the operator.

    A database error is logged as its one line only: SQLAlchemy's full message
    carries the statement's parameters, i.e. participants' names and addresses.
    Anything else is a bug and keeps its traceback.
    """
    reason = _one_line(exc)
    if isinstance(exc, SQLAlchemyError):
        log.error("session %s (element %d) could not be stored: %s", _item_id(item), i, reason)
    else:
        log.exception("session %s (element %d) could not be stored", _item_id(item), i)
    error = FieldError(prefix + "session", f"could not store: {reason}")
    return IntakeResult(_item_id(item), "error", None, None, (error,))


def upsert_sessions(items: list[Any], *, rt: Runtime | None = None, enqueue: bool = True) -> list[IntakeResult]:
    """A batch: each element stands alone, so one bad element stores nothing of itself only.

    Any failure of an element becomes that element's result and the batch goes
    on: "invalid" with field errors, or "error" with a one-line reason when
    storing it failed (its transaction rolled back). One bad element must not
    cost the platform the elements after it.
    """
    rt = rt or get_runtime()
    results = []
    for i, item in enumerate(items):
        prefix = f"[{i}]." if len(items) > 1 else ""
        try:
            results.append(upsert_session(item, rt=rt, enqueue=enqueue))
        except InvalidInput as exc:
            results.append(IntakeResult(_item_id(item), "invalid", None, None,
                                        tuple(FieldError(prefix + e.field, e.reason) for e in exc.errors)))
        except Exception as exc:  # a database error or a bug: this element's result, not the batch's end
            results.append(_failed(i, item, exc, prefix))
    return results


def cancel_session(session_id: str, *, rt: Runtime | None = None, enqueue: bool = True) -> IntakeResult:
    rt = rt or get_runtime()
    with rt.store.tx() as db:
        saved = sessions.cancel(db, session_id)
    if saved is None:
        raise NotFound(f"session {session_id!r} does not exist")
    queued = _enqueue(session_id) if saved.outcome == "updated" and enqueue else None
    return IntakeResult(session_id, saved.outcome, saved.stored_version, saved.stored_version, queued=queued)


@dataclass(frozen=True)
class SessionView:
    session: SessionLike
    revision: int
    synced_revision: int
    placements: list[Placement] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "session": as_model(self.session).model_dump(mode="json"),
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


def intake_schema() -> dict[str, Any]:
    """The JSON Schema of one session as the platform sends it, published as docs/session.schema.json.

    Generated from the validating model, so it cannot drift from what intake
    accepts; checks the schema cannot express (end after start, a link or a
    place, unique participants, the organizer's address) are in its description.
    """
    schema = Session.model_json_schema(mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://github.com/calsync/calsync/docs/session.schema.json",
        **schema,
        "title": "calsync session",
        "description": ("A mentoring session as the platform sends it to `calsync sessions upsert` or "
                        "`sync.api.upsert_session`. Also checked: `end` after `start`; a `meeting_url`, a "
                        "`location` or both; unique `user_id` and `email` among participants; no participant "
                        "with the organizer's address (CALSYNC_MAIL_FROM); `start`/`end` in the years 1900-9000 "
                        "in UTC. Unknown fields are dropped."),
    }
