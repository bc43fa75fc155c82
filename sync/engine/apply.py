"""Runs one planned action through its channel and records the outcome.

The caller holds the placement's lease under a token unique to its reconcile
run; every write here first checks that the token still holds it, so a run
whose lease expired (a very slow provider) records nothing over the run that
took over. The outcome is written in its own transaction right after the call:
success moves the placement forward, a transient failure schedules a retry, a
permanent one fails the placement with its reason (retried on a long backoff
while the session is upcoming), a configuration fault holds it, and dead
credentials hand the person over to email — recorded, with the person's other
sessions marked for re-planning, in the same transaction.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session as Db

from sync.core import backoff as limits
from sync.core.plan import Action, Kind
from sync.core.states import State
from sync.engine import logcontext, metrics
from sync.engine.runtime import Runtime
from sync.errors import AuthError, ChannelError, EventGone, Misconfigured, PermanentError, Throttled, TransientError
from sync.providers.channel import Receipt, Target
from sync.store import integrations, placements, synclog
from sync.store.db import utcnow
from sync.store.models import Placement
from sync.store.placements import LeaseLost

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """``retry_in_ms`` is set for a transient failure; ``reroute`` when the person's channel died."""

    ok: bool
    retry_in_ms: int | None = None
    reroute: bool = False
    error: str | None = None
    #: A person whose credentials just died: their other sessions need re-routing too.
    dead_user: str | None = None
    #: How it ended, for metrics: ok, retrying, failed, held, throttled, rerouted, drift, lost_lease.
    label: str = "ok"


@dataclass(frozen=True)
class Before:
    """What the row said before this attempt, restored when the far side applied nothing."""

    live: bool
    in_doubt: bool
    state: str
    #: A SEQUENCE that never reached anyone is not used up: the first invite a person
    #: ever receives carries 0, however many refusals and throttles came before it.
    sequence: int
    #: New intent (a newer revision) gave this attempt a fresh budget: its failure is news again.
    rearmed: bool = False


def apply(rt: Runtime, session_id: str, revision: int, action: Action, integration_id: int | None,
          token: str) -> Outcome:
    try:
        with logcontext.bound(session_id=session_id, user_id=action.user_id, channel=action.channel,
                              action=action.kind.value):
            outcome = _apply(rt, session_id, revision, action, integration_id, token)
    except LeaseLost as exc:
        log.warning("%s/%s of %s: %s", action.user_id, action.channel, session_id, exc)
        outcome = Outcome(ok=False, error=str(exc), label="lost_lease")
    metrics.count(action.channel, action.kind.value, outcome.label)
    return outcome


def _apply(rt: Runtime, session_id: str, revision: int, action: Action, integration_id: int | None,
           token: str) -> Outcome:
    assert action.placement_id is not None and action.kind is not Kind.NOTHING
    if action.kind is Kind.SETTLE:
        with rt.store.tx() as db:
            placements.settle(placements.held(db, action.placement_id, token), action.reason)
            synclog.log(db, session_id, action, "ok", reason=action.reason)
        return Outcome(ok=True)
    with rt.store.tx() as db:
        row = placements.held(db, action.placement_id, token)
        before = Before(row.live, row.in_doubt, row.state, row.sequence, rearmed=revision > row.attempt_revision)
        placements.mark_sending(row, action, revision)
        target = Target(placement_id=row.id, user_id=row.user_id, external_id=row.external_id,
                        sequence=action.sequence, integration_id=integration_id,
                        maybe_exists=before.live or before.in_doubt, generation=row.generation,
                        in_doubt=before.in_doubt, revision=revision)
    ctx = _Context(rt, session_id, action, token, before, _upcoming(action))
    try:
        receipt = _call(rt, action, target)
    except Misconfigured as exc:
        return ctx.held(str(exc))
    except AuthError as exc:
        return ctx.auth_failed(integration_id, str(exc))
    except EventGone as exc:
        return ctx.drifted(str(exc))
    except Throttled as exc:
        return ctx.throttled(str(exc), exc.retry_after or 1.0)
    except TransientError as exc:
        return ctx.failed(str(exc), transient=True, retry_after=exc.retry_after, applied_nothing=exc.refused)
    except PermanentError as exc:
        # A provider's refusal applied nothing; a crash inside the channel may have.
        return ctx.failed(str(exc), transient=False, retry_after=None,
                          applied_nothing=not isinstance(exc, _ChannelBug))
    with rt.store.tx() as db:
        row = placements.held(db, action.placement_id, token)
        placements.record_success(row, action, revision, receipt.external_id, receipt.generation)
        synclog.log(db, session_id, action, "ok", reason=action.reason, sequence=action.sequence,
                    detail=receipt.detail)
    return Outcome(ok=True)


def _call(rt: Runtime, action: Action, target: Target) -> Receipt:
    """The channel call. An exception that is not a channel's (a bug, a library
    surprise) fails this one placement with its reason instead of leaving it
    ``sending`` and the rest of the session unplanned; the store's own errors
    still propagate, since the outcome could not be recorded anyway."""
    channel = rt.channel(action.channel)
    if channel is None:
        raise PermanentError(f"channel {action.channel!r} is not configured in this process")
    op = channel.withdraw if action.kind is Kind.WITHDRAW else channel.place
    try:
        return op(target, action.event)
    except (ChannelError, SQLAlchemyError):
        raise
    except Exception as exc:
        log.exception("%s channel raised %s for %s", action.channel, type(exc).__name__, action.user_id)
        raise _ChannelBug(f"internal error in the {action.channel} channel: {type(exc).__name__}: {exc}") from exc


class _ChannelBug(PermanentError):
    """A channel raised something that is not a channel error: a bug, whose effect is unknown."""


def _upcoming(action: Action) -> bool:
    return action.event.end > utcnow()


@dataclass(frozen=True)
class _Context:
    rt: Runtime
    session_id: str
    action: Action
    token: str
    before: Before
    #: Failed copies keep being retried (slowly) only while the session is ahead.
    upcoming: bool

    def _row(self, db: Db) -> Placement:
        """The placement, locked, while this run still holds its lease (else LeaseLost)."""
        assert self.action.placement_id is not None
        return placements.held(db, self.action.placement_id, self.token)

    def failed(self, error: str, *, transient: bool, retry_after: float | None,
               applied_nothing: bool = False) -> Outcome:
        s = self.rt.settings
        with self.rt.store.tx() as db:
            row = self._row(db)
            if self.before.state == State.HELD:
                row.attempts = 0  # holds counted our configuration's failures, not this copy's
            attempt = row.attempts + 1
            final = not transient or attempt >= s.max_attempts
            if not final:
                delay: int | None = limits.backoff_ms(attempt, min_ms=s.retry_min_backoff_ms,
                                                      max_ms=s.retry_max_backoff_ms, retry_after_s=retry_after)
            else:
                delay = limits.failed_retry_ms(attempt - s.max_attempts) if self.upcoming else None
            placements.record_failure(row, error, State.FAILED if final else State.RETRYING, retry_at=_at(delay),
                                      before=self.before if applied_nothing else None,
                                      announce=self.before.state != State.FAILED or self.before.rearmed)
            synclog.log(db, self.session_id, self.action, "failed" if final else "retrying", error=error,
                        attempt=row.attempts, retry_in_ms=delay)
        # A failed copy's long backoff is the sweeper's to keep, not a message's.
        return Outcome(ok=False, retry_in_ms=None if final else delay, error=error,
                       label="failed" if final else "retrying")

    def held(self, error: str) -> Outcome:
        """Our configuration is at fault: hold with a growing backoff (``attempts`` counts the
        holds), and never fail the copy for it."""
        s = self.rt.settings
        with self.rt.store.tx() as db:
            row = self._row(db)
            delay = limits.backoff_ms(row.attempts + 1, min_ms=s.retry_min_backoff_ms, max_ms=s.retry_max_backoff_ms)
            placements.record_failure(row, error, State.HELD, retry_at=_at(delay), before=self.before)
            synclog.log(db, self.session_id, self.action, "held", error=error, retry_in_ms=delay)
        return Outcome(ok=False, retry_in_ms=delay, error=error, label="held")

    def auth_failed(self, integration_id: int | None, error: str) -> Outcome:
        if integration_id is None:
            return self.failed(error, transient=False, retry_after=None)
        user_id = self.action.user_id
        with self.rt.store.tx() as db:
            integrations.mark_dead(db, integration_id, error)
            row = self._row(db)
            # Whatever this attempt did, a dead token applied nothing; a copy that was there stays.
            placements.strand(row, error, was_live=self.before.live, was_in_doubt=self.before.in_doubt)
            synclog.log(db, self.session_id, self.action, "rerouted", error=error)
            # The routing change is intent for every session of theirs, stored with its cause.
            integrations.touch_sessions_of(db, user_id)
        return Outcome(ok=False, reroute=True, error=error, dead_user=user_id, label="rerouted")

    def drifted(self, error: str) -> Outcome:
        with self.rt.store.tx() as db:
            row = self._row(db)
            placements.drifted(row, error)
            synclog.log(db, self.session_id, self.action, "drift", error=error)
        return Outcome(ok=False, error=error, label="drift")

    def throttled(self, error: str, retry_after: float) -> Outcome:
        """A quota said wait: the placement comes back later, and no attempt is spent.

        Nothing was applied (our limiter stopped the call, or the provider refused
        it with 429), so the copy is exactly as live and as certain as before.
        """
        delay = int(retry_after * 1000)
        with self.rt.store.tx() as db:
            row = self._row(db)
            placements.record_failure(row, error, State.RETRYING, retry_at=_at(delay), before=self.before,
                                      spend=False)
            synclog.log(db, self.session_id, self.action, "throttled", error=error, retry_in_ms=delay)
        return Outcome(ok=False, retry_in_ms=delay, error=error, label="throttled")


def _at(delay_ms: int | None) -> datetime | None:
    return None if delay_ms is None else utcnow() + timedelta(milliseconds=delay_ms)
