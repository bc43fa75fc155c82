"""Answers for support: what calsync would place, what the calendar holds, and what to do next.

Everything here only reads — the store, and the providers through the same
channels (and quotas) the worker uses. Repairs are a resync away, because the
session is authoritative.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from sync.core.drift import Difference, Observed, compare
from sync.core.plan import Recorded
from sync.core.render import RenderedEvent, render
from sync.core.session import Participant
from sync.engine.reconcile import snapshot
from sync.engine.runtime import Runtime
from sync.errors import AuthError, ChannelError, NotFound
from sync.providers.channel import CalendarChannel, Target
from sync.store import outbox, placements, synclog
from sync.store.db import utcnow
from sync.store.integrations import mark_dead, touch_sessions_of
from sync.store.models import Integration, Person, Placement, SessionRow


@dataclass
class PlacementCheck:
    user_id: str
    channel: str
    state: str
    expected: RenderedEvent | None
    copies: list[Observed] = field(default_factory=list)
    differences: list[Difference] = field(default_factory=list)
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        exp = self.expected
        return {
            "user_id": self.user_id, "channel": self.channel, "state": self.state, "note": self.note,
            "expected": None if exp is None else {"title": exp.title, "start": exp.start.isoformat(),
                                                  "end": exp.end.isoformat(), "where": exp.where},
            "actual": [{"id": c.external_id, "title": c.title, "start": c.start.isoformat(),
                        "end": c.end.isoformat(), "where": c.where, "cancelled": c.cancelled} for c in self.copies],
            "differences": [{"kind": d.kind, "detail": d.detail} for d in self.differences],
        }


def _check(rt: Runtime, rec: Recorded, row: Placement, expected: RenderedEvent | None, probe_event: RenderedEvent,
           integration_id: int | None) -> PlacementCheck:
    check = PlacementCheck(rec.user_id, rec.channel, rec.state, expected)
    if rec.channel == "email":
        with rt.store.tx() as db:
            last = outbox.last_for(db, row.id)
            check.note = ("no invite sent yet" if last is None else
                          f"last invite {last.method} seq {last.sequence} {last.state}"
                          f"{' at ' + last.sent_at.isoformat() if last.sent_at else ''}")
        if expected is not None and not rec.live:
            check.differences.append(Difference("missing", "no invite has gone out"))
        if expected is not None and rec.live and rec.content_hash != expected.content_hash:
            check.differences.append(Difference("outdated", "the last invite shows older details"))
        return check
    channel = rt.channel(rec.channel)
    if not isinstance(channel, CalendarChannel) or integration_id is None:
        check.note = f"cannot read the {rec.channel} calendar (integration not usable)"
        return check
    try:
        target = Target(row.id, rec.user_id, rec.external_id, rec.sequence, integration_id)
        check.copies = channel.inspect(target, probe_event)
    except ChannelError as exc:
        check.note = f"could not read the calendar: {exc}"
        return check
    check.differences = compare(expected, check.copies)
    return check


def diagnose_session(rt: Runtime, session_id: str) -> list[PlacementCheck]:
    snap = snapshot(rt, session_id)
    if snap is None:
        raise NotFound(f"session {session_id!r} does not exist")
    session = snap.session
    wanted = {p.user_id: p for p in session.participants} if session.status == "scheduled" else {}
    with rt.store.tx() as db:
        rows = placements.for_session(db, session_id)
    checks = []
    for row in rows:
        rec = placements.recorded(row)
        who = wanted.get(rec.user_id)
        probe_event = render(session, who or Participant(user_id=rec.user_id, email=rec.recipient.email,
                                                         name=rec.recipient.name))
        on_this_channel = any(a.user_id == rec.user_id and a.channel == rec.channel for a in snap.actions
                              if a.kind.value != "withdraw")
        expected = probe_event if who is not None and on_this_channel else None
        checks.append(_check(rt, rec, row, expected, probe_event,
                             snap.integration_ids.get((rec.user_id, rec.channel))))
    placed = {(c.user_id, c.channel) for c in checks}
    for action in snap.actions:
        if (action.user_id, action.channel) not in placed:
            checks.append(PlacementCheck(action.user_id, action.channel, "not yet placed", action.event,
                                         differences=[Difference("missing", "calsync has not placed it yet")]))
    return checks


@dataclass(frozen=True)
class UserDiagnosis:
    """One person's calendar state: their integrations, a live check of the active one, their
    upcoming placements and recent errors, and a verdict support staff can act on."""

    user_id: str
    email: str
    #: The channel their sessions go through now.
    channel: str
    integrations: list[dict[str, Any]]
    live_check: dict[str, Any] | None
    upcoming: list[dict[str, Any]]
    recent_errors: list[dict[str, Any]]
    verdict: str
    ok: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def diagnose_user(rt: Runtime, user_id: str, *, days: int = 30) -> UserDiagnosis:
    now = utcnow()
    with rt.store.tx() as db:
        person = db.get(Person, user_id)
        if person is None:
            raise NotFound(f"user {user_id!r} does not exist")
        rows = list(db.scalars(select(Integration).where(Integration.user_id == user_id)))
        upcoming = db.execute(
            select(Placement.session_id, Placement.channel, Placement.state, Placement.last_error, SessionRow.start,
                   SessionRow.title)
            .join(SessionRow, SessionRow.id == Placement.session_id)
            .where(Placement.user_id == user_id, SessionRow.start >= now, SessionRow.start <= now + timedelta(days))
            .order_by(SessionRow.start)).all()
        errors = synclog.recent_errors(db, user_id)
        integrations = [{"id": r.id, "provider": r.provider, "account": r.account_email, "calendar": r.calendar_id,
                         "status": r.status, "reason": r.status_reason, "since": r.updated_at} for r in rows]
    active = next((i for i in integrations if i["status"] == "active"), None)
    live_check: dict[str, Any] | None = None
    if active is not None:
        channel = rt.channel(active["provider"])
        try:
            calendar = isinstance(channel, CalendarChannel)
            detail = channel.probe(active["id"]) if calendar else "channel not configured here"
            live_check = {"ok": calendar, "detail": detail}
        except AuthError as exc:
            # The provider just told us the grant is dead: record it, exactly as a
            # worker would have, so routing moves this person to email.
            with rt.store.tx() as db:
                mark_dead(db, active["id"], str(exc))
                touch_sessions_of(db, user_id)
                row = db.get(Integration, active["id"])
                assert row is not None
                active.update(status=row.status, reason=row.status_reason, since=row.updated_at)
            live_check = {"ok": False, "detail": str(exc), "token_dead": True}
            active = None
        except ChannelError as exc:
            live_check = {"ok": False, "detail": str(exc)}
    verdict = _verdict(integrations, active, live_check, [u.state for u in upcoming])
    return UserDiagnosis(
        user_id=user_id, email=person.email, channel=active["provider"] if active else "email",
        integrations=[{**i, "since": i["since"].isoformat()} for i in integrations],
        live_check=live_check,
        upcoming=[{"session_id": u.session_id, "title": u.title, "start": u.start.isoformat(),
                   "channel": u.channel, "state": u.state, "last_error": u.last_error} for u in upcoming],
        recent_errors=[{"at": e.at.isoformat(), "session_id": e.session_id, "channel": e.channel,
                        "action": e.action, "result": e.result, "detail": e.detail} for e in errors],
        verdict=verdict["text"], ok=verdict["ok"],
    )


def _verdict(integrations: list[dict[str, Any]], active: dict[str, Any] | None, live: dict[str, Any] | None,
             states: list[str]) -> dict[str, Any]:
    dead = next((i for i in integrations if i["status"] == "needs_reconnect"), None)
    if active is None and dead is not None:
        since: datetime = dead["since"]
        just_found = " (found just now: `calsync resync --user` moves their sessions to email at once)" \
            if live and live.get("token_dead") else ""
        return {"ok": False, "text": f"{dead['provider']} access lost on {since.date().isoformat()} "
                                     f"({dead['reason']}): ask them to reconnect; meanwhile invites go by "
                                     f"email{just_found}"}
    if live is not None and not live["ok"]:
        return {"ok": False, "text": f"calendar check failed ({live['detail']}): run `calsync resync --user` "
                                     "after it recovers, or ask them to reconnect if it persists"}
    failed = states.count("failed") + states.count("drift")
    if failed:
        return {"ok": False, "text": f"{failed} upcoming placement(s) failed or drifted: "
                                     "`calsync resync --user <id>` retries them"}
    if active is None:
        return {"ok": True, "text": "no connected calendar: sessions arrive as emailed invites"}
    return {"ok": True, "text": f"all good: sessions are placed on their {active['provider']} calendar"}


def scan(rt: Runtime, *, user_id: str | None = None, days: int = 14) -> list[tuple[str, PlacementCheck]]:
    """The session comparison over upcoming calendar placements (email copies cannot be read)."""
    now = utcnow()
    with rt.store.tx() as db:
        stmt = (select(Placement.session_id).join(SessionRow, SessionRow.id == Placement.session_id)
                .where(Placement.channel != "email", SessionRow.start >= now,
                       SessionRow.start <= now + timedelta(days=days)).distinct())
        if user_id is not None:
            stmt = stmt.where(Placement.user_id == user_id)
        ids = sorted(set(db.scalars(stmt)))
    found = []
    for sid in ids:
        for check in diagnose_session(rt, sid):
            if check.channel != "email" and (user_id is None or check.user_id == user_id):
                found.append((sid, check))
    return found



def repair_drift(rt: Runtime, session_id: str) -> list[PlacementCheck]:
    """Make the next reconcile rewrite every calendar copy that drifted from the session.

    A moved or retitled copy loses its recorded hash (so it is updated); a
    deleted or missing one stops being live (so it is placed again); extra
    copies found by the tag are deleted now. Returns what was found.
    """
    checks = [c for c in diagnose_session(rt, session_id) if c.channel != "email" and c.differences]
    with rt.store.tx() as db:
        rows = {(p.user_id, p.channel): p for p in placements.for_session(db, session_id)}
        for check in checks:
            row = rows.get((check.user_id, check.channel))
            if row is None:
                continue
            kinds = {d.kind for d in check.differences}
            placements.drifted(row, f"found {', '.join(sorted(kinds))} by diagnose",
                               gone=bool(kinds & {"deleted", "missing"}))
            synclog.log(db, session_id, None, "drift", user_id=check.user_id, channel=check.channel,
                        found=sorted(kinds))
    for check in checks:
        row = rows.get((check.user_id, check.channel))
        extra = [c for c in check.copies if not c.cancelled and row is not None and c.external_id != row.external_id]
        channel = rt.channel(check.channel)
        if not extra or channel is None or check.expected is None:
            continue
        with rt.store.tx() as db:
            integration = db.scalars(select(Integration.id).where(
                Integration.user_id == check.user_id, Integration.provider == check.channel)).first()
        for copy in extra[1:] if row is not None and row.external_id is None else extra:
            channel.withdraw(Target(0, check.user_id, copy.external_id, 0, integration), check.expected)
    return checks
