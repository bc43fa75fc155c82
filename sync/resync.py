"""Re-plan many sessions at once: what support runs after an outage or a cohort-wide edit.

Planning is done in bulk — a handful of queries per chunk of sessions, never
one per placement — so a dry run over a whole platform takes seconds. Only
sessions whose plan has something to do are enqueued, with ``retry_failed``
so placements that gave up are tried again: the session is authoritative.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session as Db

from sync.desired import SessionPlan, plan_session
from sync.plan import Kind
from sync.runtime import Runtime
from sync.store import integrations, placements
from sync.store.models import ParticipantRow, Placement, SessionRow
from sync.store.placements import PLANNED_COLUMNS
from sync.store.sessions import COLUMNS, to_stored

#: Sessions loaded per round trip while planning in bulk.
CHUNK = 2000


@dataclass(frozen=True)
class Selection:
    """Which sessions: exactly one of session_id, user_id, program, everything."""

    session_id: str | None = None
    user_id: str | None = None
    program: str | None = None
    everything: bool = False
    #: Only sessions starting at or after this moment.
    since: datetime | None = None


def select_ids(db: Db, sel: Selection) -> list[str]:
    stmt = select(SessionRow.id)
    if sel.session_id is not None:
        stmt = stmt.where(SessionRow.id == sel.session_id)
    elif sel.user_id is not None:
        in_now = select(ParticipantRow.session_id).where(ParticipantRow.user_id == sel.user_id)
        holds = select(Placement.session_id).where(Placement.user_id == sel.user_id, Placement.live.is_(True))
        stmt = stmt.where(SessionRow.id.in_(in_now.union(holds)))
    elif sel.program is not None:
        stmt = stmt.where(SessionRow.program == sel.program)
    elif not sel.everything:
        raise ValueError("a selection needs a session, a user, a program or everything")
    if sel.since is not None:
        stmt = stmt.where(SessionRow.start >= sel.since)
    return list(db.scalars(stmt.order_by(SessionRow.start, SessionRow.id)))


def plan_many(rt: Runtime, ids: list[str], *, retry_failed: bool = True) -> Iterator[tuple[str, SessionPlan]]:
    channels = rt.channels
    for at in range(0, len(ids), CHUNK):
        chunk = ids[at:at + CHUNK]
        # Plain rows, not ORM objects: the planner only reads them, and building
        # identity-mapped instances would cost more than the planning itself.
        with rt.store.tx() as db:
            s_cols = [getattr(SessionRow, c) for c in ("id", "revision", *COLUMNS)]
            rows = {r.id: r for r in db.execute(select(*s_cols).where(SessionRow.id.in_(chunk)))}
            parts: dict[str, list[Any]] = defaultdict(list)
            for p in db.execute(select(ParticipantRow.__table__).where(ParticipantRow.session_id.in_(chunk))):
                parts[p.session_id].append(p)
            recs: dict[str, list[Any]] = defaultdict(list)
            p_cols = [Placement.session_id, *(getattr(Placement, c) for c in PLANNED_COLUMNS)]
            for sid, *values in db.execute(select(*p_cols).where(Placement.session_id.in_(chunk))):
                recs[sid].append(placements.recorded_from(values))
            people = {p.user_id for ps in parts.values() for p in ps} | {p.user_id for ps in recs.values() for p in ps}
            usable_by_user = defaultdict(list)
            for u in integrations.usable(db, people):
                usable_by_user[u.user_id].append(u)
            loaded = [(sid, rows[sid].revision, to_stored(rows[sid], parts[sid]),
                       recs[sid]) for sid in chunk if sid in rows]
        for sid, revision, session, recorded in loaded:
            users = {p.user_id for p in session.participants} | {r.user_id for r in recorded}
            usable = [u for uid in users for u in usable_by_user.get(uid, ())]
            yield sid, plan_session(session, recorded, usable, channels, revision=revision,
                                    retry_failed=retry_failed)


@dataclass
class ResyncResult:
    sessions: int = 0
    placements: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    enqueued: list[str] = field(default_factory=list)
    #: (session, user, channel, action, reason) for every planned step, for --dry-run.
    steps: list[tuple[str, str, str, str, str]] = field(default_factory=list)


def resync(rt: Runtime, sel: Selection, *, dry_run: bool, enqueue: Callable[[str], None],
           keep_steps: bool = True) -> ResyncResult:
    with rt.store.tx() as db:
        ids = select_ids(db, sel)
    result = ResyncResult(sessions=len(ids))
    for sid, planned in plan_many(rt, ids):
        busy = False
        for a in planned.actions:
            result.placements += 1
            result.counts[a.kind.value] += 1
            busy = busy or a.kind is not Kind.NOTHING
            if keep_steps:
                result.steps.append((sid, a.user_id, a.channel, a.kind.value, a.reason))
        if busy:
            result.enqueued.append(sid)
            if not dry_run:
                enqueue(sid)
    return result
