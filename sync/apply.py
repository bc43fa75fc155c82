"""Runs one planned action through its channel and records the outcome.

The placement's lease is held by the caller, so nobody else touches the row
while the provider call is in flight. The outcome is written in its own
transaction right after the call: success moves the placement forward,
a transient failure schedules a retry, a permanent one fails the placement
with its reason, and dead credentials hand the person over to email.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sync import limits, metrics
from sync.channels import Target
from sync.errors import AuthError, EventGone, PermanentError, TransientError
from sync.plan import Action, Kind
from sync.quota import Throttled
from sync.runtime import Runtime
from sync.store import integrations, placements
from sync.store.db import utcnow
from sync.store.models import Placement


@dataclass(frozen=True)
class Outcome:
    """``retry_in_ms`` is set for a transient failure; ``reroute`` when the person's channel died."""

    ok: bool
    retry_in_ms: int | None = None
    reroute: bool = False
    error: str | None = None
    #: A person whose credentials just died: their other sessions need re-routing too.
    dead_user: str | None = None
    #: How it ended, for metrics: ok, retrying, failed, throttled, rerouted, drift.
    label: str = "ok"


def apply(rt: Runtime, session_id: str, revision: int, action: Action, integration_id: int | None) -> Outcome:
    outcome = _apply(rt, session_id, revision, action, integration_id)
    metrics.count(action.channel, action.kind.value, outcome.label)
    return outcome


def _apply(rt: Runtime, session_id: str, revision: int, action: Action, integration_id: int | None) -> Outcome:
    assert action.kind is not Kind.NOTHING and action.placement_id is not None
    with rt.store.tx() as db:
        row = db.get(Placement, action.placement_id)
        assert row is not None
        maybe_exists = row.live  # a copy is live, or an earlier attempt's outcome is unknown
        placements.mark_sending(db, row, action)
        target = Target(placement_id=row.id, user_id=row.user_id, external_id=row.external_id,
                        sequence=action.sequence, integration_id=integration_id, maybe_exists=maybe_exists)
    channel = rt.channel(action.channel)
    try:
        if channel is None:
            raise PermanentError(f"channel {action.channel!r} is not configured in this process")
        op = channel.withdraw if action.kind is Kind.WITHDRAW else channel.place
        receipt = op(target, action.event)
    except AuthError as exc:
        return _auth_failed(rt, session_id, action, integration_id, str(exc))
    except EventGone as exc:
        return _drifted(rt, session_id, action, str(exc))
    except Throttled as exc:
        return _throttled(rt, session_id, action, str(exc), exc.retry_after or 1.0, was_live=maybe_exists)
    except TransientError as exc:
        return _failed(rt, session_id, action, str(exc), transient=True, retry_after=exc.retry_after)
    except PermanentError as exc:
        return _failed(rt, session_id, action, str(exc), transient=False, retry_after=None)
    with rt.store.tx() as db:
        row = db.get(Placement, action.placement_id)
        assert row is not None
        placements.record_success(db, row, action, revision, receipt.external_id)
        placements.log(db, session_id, action, "ok", reason=action.reason, sequence=action.sequence,
                       detail=receipt.detail)
    return Outcome(ok=True)


def _failed(rt: Runtime, session_id: str, action: Action, error: str, *, transient: bool,
            retry_after: float | None) -> Outcome:
    s = rt.settings
    with rt.store.tx() as db:
        row = db.get(Placement, action.placement_id)
        assert row is not None
        final = not transient or row.attempts + 1 >= s.max_attempts
        delay = None if final else limits.backoff_ms(
            row.attempts + 1, min_ms=s.retry_min_backoff_ms, max_ms=s.retry_max_backoff_ms,
            retry_after_s=retry_after)
        retry_at = None if delay is None else utcnow() + timedelta(milliseconds=delay)
        placements.record_failure(db, row, error, final=final, retry_at=retry_at)
        placements.log(db, session_id, action, "failed" if final else "retrying", error=error,
                       attempt=row.attempts, retry_in_ms=delay)
    return Outcome(ok=False, retry_in_ms=delay, error=error, label="failed" if final else "retrying")


def _auth_failed(rt: Runtime, session_id: str, action: Action, integration_id: int | None,
                 error: str) -> Outcome:
    if integration_id is None:
        return _failed(rt, session_id, action, error, transient=False, retry_after=None)
    with rt.store.tx() as db:
        integrations.mark_needs_reconnect(db, integration_id, error)
        row = db.get(Placement, action.placement_id)
        assert row is not None
        # A copy there (if any) can no longer be changed: it waits for a reconnect.
        row.state, row.last_error = ("stranded" if row.live else "failed"), error
        placements.log(db, session_id, action, "rerouted", error=error)
    return Outcome(ok=False, reroute=True, error=error, dead_user=action.user_id, label="rerouted")


def _drifted(rt: Runtime, session_id: str, action: Action, error: str) -> Outcome:
    with rt.store.tx() as db:
        row = db.get(Placement, action.placement_id)
        assert row is not None
        row.live, row.external_id, row.state, row.last_error = False, None, "drift", error
        row.content_hash = row.material_hash = None
        placements.log(db, session_id, action, "drift", error=error)
    return Outcome(ok=False, error=error, label="drift")


def _throttled(rt: Runtime, session_id: str, action: Action, error: str, retry_after: float, *,
               was_live: bool) -> Outcome:
    """A quota said wait: the placement comes back later, and no attempt is spent.

    Nothing was applied (our limiter stopped the call, or the provider refused
    it with 429), so the copy is exactly as live as it was before the attempt.
    """
    delay = int(retry_after * 1000)
    with rt.store.tx() as db:
        row = db.get(Placement, action.placement_id)
        assert row is not None
        row.state, row.last_error, row.live = "retrying", error, was_live
        row.next_attempt_at = utcnow() + timedelta(milliseconds=delay)
        placements.log(db, session_id, action, "throttled", error=error, retry_in_ms=delay)
    return Outcome(ok=False, retry_in_ms=delay, error=error, label="throttled")
