"""reconcile(session): bring every participant's copy in line with the session.

Read → plan → lease → re-plan → act. The leases are taken under a token
unique to this run (two threads of one process are two runs), and the second
plan runs on rows read after they were taken, so if another run finished a
placement in between, this one sees it done and does nothing: two runs never
both send.
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta

from sync.core.plan import Action, Kind, plan_session
from sync.core.session import SessionLike
from sync.engine import logcontext
from sync.engine.apply import apply
from sync.engine.runtime import Runtime
from sync.store import integrations, placements, sessions
from sync.store.db import utcnow

#: How many times one reconcile re-plans after a person's channel died mid-run.
MAX_REROUTES = 3


@dataclass
class Report:
    """What one reconcile did. ``retry_in_ms`` asks the worker to come back later."""

    session_id: str
    found: bool = True
    counts: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    retry_in_ms: int | None = None
    busy: bool = False
    #: People whose integration died during this run.
    dead_users: set[str] = field(default_factory=set)
    #: Some copy waits for a scheduled retry: the session is not settled yet.
    waiting: bool = False
    #: The session revision the last plan acted on.
    revision: int = 0

    def want_retry(self, delay_ms: int) -> None:
        self.retry_in_ms = delay_ms if self.retry_in_ms is None else min(self.retry_in_ms, delay_ms)


@dataclass(frozen=True)
class Snapshot:
    session: SessionLike
    revision: int
    actions: list[Action]
    #: (user_id, channel) → integration id for every usable integration.
    integration_ids: dict[tuple[str, str], int]


def snapshot(rt: Runtime, session_id: str, *, retry_failed: bool = False) -> Snapshot | None:
    """The session as stored and the plan for it, read in one transaction."""
    with rt.store.tx() as db:
        session = sessions.load(db, session_id)
        row = sessions.row(db, session_id)
        if session is None or row is None:
            return None
        recs = [placements.recorded(p) for p in placements.for_session(db, session_id)]
        people = [p.user_id for p in session.participants] + [r.user_id for r in recs]
        usable = integrations.usable(db, people)
        revision = row.revision
    planned = plan_session(session, recs, usable, rt.channels, revision=revision, retry_failed=retry_failed,
                           now=utcnow(), place_past=rt.settings.past_sessions == "send")
    return Snapshot(session, revision, planned.actions, planned.integration_ids)


def reconcile(rt: Runtime, session_id: str, *, retry_failed: bool = False) -> Report:
    with logcontext.bound(session_id=session_id):
        return _reconcile(rt, session_id, retry_failed)


def _reconcile(rt: Runtime, session_id: str, retry_failed: bool) -> Report:
    report = Report(session_id)
    for _ in range(MAX_REROUTES):
        snap = snapshot(rt, session_id, retry_failed=retry_failed)
        if snap is None:
            report.found = False
            return report
        if not _run(rt, snap, report, retry_failed):
            break
    if report.retry_in_ms is None and not report.busy and not report.waiting:
        with rt.store.tx() as db:
            sessions.mark_synced(db, session_id, max(snap.revision, report.revision))
    return report


def _run(rt: Runtime, snap: Snapshot, report: Report, retry_failed: bool) -> bool:
    """Lease, re-plan and act; True when a channel died and the session must be re-planned."""
    todo = [a for a in snap.actions if a.kind is not Kind.NOTHING]
    report.counts.update(Kind.NOTHING.value for a in snap.actions if a.kind is Kind.NOTHING)
    report.waiting = any(not a.settled for a in snap.actions)
    if not todo:
        return False
    lease = timedelta(seconds=rt.settings.lease_seconds)
    # Unique to this run; the process part says where a stuck lease came from.
    token = f"{rt.owner[:40]}/{uuid.uuid4().hex[:20]}"
    held: set[int] = set()
    try:
        with rt.store.tx() as db:
            ids = [placements.ensure(db, snap.session.id, a).id for a in todo]
        # All claims in one short transaction: each is its own compare-and-set, so
        # batching them changes nothing for a racing run and saves commits.
        with rt.store.tx() as db:
            for pid in ids:
                if placements.claim(db, pid, token, lease):
                    held.add(pid)
                else:
                    report.busy = True
        fresh = snapshot(rt, snap.session.id, retry_failed=retry_failed)
        if fresh is None:
            return False
        report.waiting = any(not a.settled for a in fresh.actions)
        report.revision = fresh.revision
        reroute = False
        for action in fresh.actions:
            if action.kind is Kind.NOTHING or action.placement_id not in held:
                continue
            integration_id = fresh.integration_ids.get((action.user_id, action.channel))
            outcome = apply(rt, snap.session.id, fresh.revision, action, integration_id, token)
            if outcome.label == "lost_lease":
                report.busy = True
            elif outcome.ok:
                report.counts[action.kind.value] += 1
            else:
                report.errors.append(f"{action.user_id}/{action.channel}: {outcome.error}")
                report.counts["failed"] += 1
                if outcome.retry_in_ms is not None:
                    report.want_retry(outcome.retry_in_ms)
                reroute = reroute or outcome.reroute
                if outcome.dead_user:
                    report.dead_users.add(outcome.dead_user)
        if report.busy:
            report.want_retry(rt.settings.retry_min_backoff_ms)
        return reroute
    finally:
        if held:
            with rt.store.tx() as db:
                for pid in held:
                    placements.release(db, pid, token)
