"""Reading and writing sessions and their participants."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.orm import Session as Db

from sync.core.session import Participant, Session, StoredParticipant, StoredSession, as_model
from sync.core.states import State
from sync.store.db import utcnow
from sync.store.models import ParticipantRow, Person, SessionRow

Outcome = Literal["created", "updated", "unchanged", "stale", "conflict"]


@dataclass(frozen=True)
class SaveResult:
    outcome: Outcome
    stored_version: int
    revision: int


#: Session fields stored as columns of the same name.
COLUMNS = ("version", "title", "program", "start", "end", "timezone", "status", "meeting_url",
           "location", "agenda_html", "view_url")


def _fields(session: Session) -> dict[str, object]:
    return {name: getattr(session, name) for name in COLUMNS}


def to_stored(row: Any, participants: list[Any]) -> StoredSession:
    """Rows (ORM rows or plain result rows) back into a session: the one way it is rebuilt.

    They were validated on the way in, so this skips validation (and
    re-sanitising), which bulk planning over many sessions needs."""
    return StoredSession(
        row.id, row.version, row.title, row.program, row.start, row.end, row.timezone, row.status, row.meeting_url,
        row.location, row.agenda_html, row.view_url,
        tuple(StoredParticipant(p.user_id, p.email, p.name, p.role, p.timezone)
              for p in sorted(participants, key=lambda p: p.position)),
    )


def load(db: Db, session_id: str, *, for_update: bool = False) -> StoredSession | None:
    stmt = select(SessionRow).where(SessionRow.id == session_id)
    if for_update:
        stmt = stmt.with_for_update()
    row = db.scalars(stmt).one_or_none()
    if row is None:
        return None
    parts = list(db.scalars(select(ParticipantRow).where(ParticipantRow.session_id == session_id)))
    return to_stored(row, parts)


def row(db: Db, session_id: str) -> SessionRow | None:
    return db.get(SessionRow, session_id)


def _upsert_people(db: Db, participants: tuple[Participant, ...]) -> None:
    """Create or refresh every participant's person row in one ``INSERT … ON CONFLICT DO UPDATE``.

    Get-then-add lost a race: two bookings naming the same new person at once
    both saw no row, and the second insert failed the whole intake with an
    IntegrityError. Rows go in sorted by user_id, so two transactions lock the
    same people in the same order and cannot deadlock. ``updated_at`` is set
    by hand because an ON CONFLICT update skips the column's ``onupdate``.
    """
    from sqlalchemy.dialects import postgresql, sqlite

    insert = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}[db.get_bind().dialect.name]
    now = utcnow()
    rows = [{"user_id": p.user_id, "email": p.email, "name": p.name, "timezone": p.timezone, "updated_at": now}
            for p in sorted(participants, key=lambda p: p.user_id)]
    stmt = insert(Person).values(rows)
    db.execute(stmt.on_conflict_do_update(
        index_elements=[Person.user_id],
        set_={"email": stmt.excluded.email, "name": stmt.excluded.name, "timezone": stmt.excluded.timezone,
              "updated_at": stmt.excluded.updated_at},
    ))


def save(db: Db, session: Session) -> SaveResult:
    """Store a validated session unless the stored one is as new or newer.

    The row is locked first (PostgreSQL) so two intakes of the same session
    cannot interleave; on SQLite the write lock serialises them anyway.
    """
    existing = db.scalars(select(SessionRow).where(SessionRow.id == session.id).with_for_update()).one_or_none()
    if existing is not None:
        if session.version < existing.version:
            return SaveResult("stale", existing.version, existing.revision)
        if session.version == existing.version:
            current = load(db, session.id)
            same = current is not None and as_model(current).model_dump() == session.model_dump()
            return SaveResult("unchanged" if same else "conflict", existing.version, existing.revision)
    _upsert_people(db, session.participants)
    if existing is None:
        existing = SessionRow(id=session.id, revision=1, synced_revision=0, **_fields(session))
        db.add(existing)
        outcome: Outcome = "created"
    else:
        for key, value in _fields(session).items():
            setattr(existing, key, value)
        existing.revision += 1
        outcome = "updated"
        db.execute(delete(ParticipantRow).where(ParticipantRow.session_id == session.id))
    db.flush()
    db.add_all(
        ParticipantRow(session_id=session.id, user_id=p.user_id, position=i, email=p.email,
                       name=p.name, role=p.role, timezone=p.timezone)
        for i, p in enumerate(session.participants)
    )
    db.flush()
    return SaveResult(outcome, session.version, existing.revision)


def cancel(db: Db, session_id: str) -> SaveResult | None:
    existing = db.scalars(select(SessionRow).where(SessionRow.id == session_id).with_for_update()).one_or_none()
    if existing is None:
        return None
    if existing.status == "cancelled":
        return SaveResult("unchanged", existing.version, existing.revision)
    existing.status = "cancelled"
    existing.revision += 1
    db.flush()
    return SaveResult("updated", existing.version, existing.revision)


def mark_synced(db: Db, session_id: str, revision: int) -> None:
    """Record that every placement settled at ``revision`` (never moves backwards)."""
    db.execute(
        update(SessionRow)
        .where(SessionRow.id == session_id, SessionRow.synced_revision < revision)
        .values(synced_revision=revision)
    )


#: A placement left ``pending`` or ``sending`` with no live lease for this long was
#: abandoned by a killed worker (a live run holds a lease, or is about to take one).
ABANDONED_AFTER = timedelta(minutes=1)


def lagging(db: Db, limit: int = 10_000, now: datetime | None = None) -> list[str]:
    """Sessions the sweeper must enqueue, because the store says something is owed.

    - changed (a new revision: an edit, or a participant's routing changed) and not
      settled since — unless a retry for that very revision is still scheduled,
      whose own message will come (sweeping would only retry sooner than asked);
    - any placement whose scheduled retry is due: its message was lost, or it is a
      failed copy's long backoff, which no message carries;
    - any placement a killed worker left ``pending`` or ``sending`` with no live lease.

    Every one of these is a row, written in the transaction of its cause, so a
    lost or flushed queue delays the work until the next sweep, never drops it.
    """
    from sync.store.models import Placement

    now = now or utcnow()
    waiting = (select(Placement.session_id).join(SessionRow, SessionRow.id == Placement.session_id)
               .where(Placement.next_attempt_at > now, Placement.attempt_revision >= SessionRow.revision,
                      Placement.state.in_((State.RETRYING, State.HELD))))
    behind = (select(SessionRow.id)
              .where(SessionRow.synced_revision < SessionRow.revision, SessionRow.id.not_in(waiting)))
    due = select(Placement.session_id).where(Placement.next_attempt_at <= now)
    abandoned = select(Placement.session_id).where(
        Placement.state.in_((State.PENDING, State.SENDING)),
        or_(Placement.lease_until < now,
            and_(Placement.lease_until.is_(None), Placement.updated_at < now - ABANDONED_AFTER)))
    owed = behind.union(due, abandoned).subquery()
    stmt = (select(SessionRow.id).where(SessionRow.id.in_(select(owed.c[0])))
            .order_by(SessionRow.updated_at).limit(limit))
    return list(db.scalars(stmt))


def for_user_query(user_id: str) -> Any:
    """Ids of the sessions a person is in now, or still holds a copy of (a subquery)."""
    from sync.store.models import Placement

    current = select(ParticipantRow.session_id).where(ParticipantRow.user_id == user_id)
    held = select(Placement.session_id).where(Placement.user_id == user_id, Placement.live.is_(True))
    return current.union(held)


def for_user(db: Db, user_id: str) -> list[str]:
    """Sessions a person is in now, or still holds a copy of."""
    return sorted(set(db.scalars(for_user_query(user_id))))
