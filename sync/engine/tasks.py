"""Dramatiq actors. Messages carry ids only; the worker reads the current session."""

from __future__ import annotations

import logging

import dramatiq

from sync.config import get_settings
from sync.engine.broker import QUEUE, get_broker
from sync.engine.people import resync_user
from sync.engine.reconcile import reconcile
from sync.engine.runtime import get_runtime
from sync.engine.sweep import sweep as sweep_lagging

log = logging.getLogger(__name__)

#: Retries for crashes that are not a channel's doing (database down, a bug).
MAX_CRASH_RETRIES = 10

_settings = get_settings()
#: calsync's own broker, passed to each actor: the host application's global broker is left alone.
broker = get_broker()


@dramatiq.actor(
    broker=broker,
    queue_name=QUEUE,
    max_retries=MAX_CRASH_RETRIES,
    min_backoff=_settings.retry_min_backoff_ms,
    max_backoff=_settings.retry_max_backoff_ms,
    time_limit=max(60, _settings.lease_seconds - 60) * 1000,
)
def sync_session(session_id: str, retry_failed: bool = False) -> None:
    report = reconcile(get_runtime(), session_id, retry_failed=retry_failed)
    if not report.found:
        log.info("session %s no longer exists; nothing to do", session_id)
        return
    log.info("reconciled %s: %s", session_id, dict(report.counts))
    for user_id in report.dead_users:
        # Their other sessions must move to email now, not whenever each next changes.
        others = [sid for sid in resync_user(get_runtime(), user_id, enqueue) if sid != session_id]
        log.warning("integration of %s died; re-routing %d other sessions to email", user_id, len(others))
    if report.retry_in_ms is not None:
        # A new message, not Dramatiq's Retry: Retry counts against the message's
        # crash budget, so ten throttles and one crash would dead-letter the session.
        # The wait itself is stored (next_attempt_at); this message only wakes it.
        sync_session.send_with_options(args=(session_id,), kwargs={"retry_failed": retry_failed},
                                       delay=report.retry_in_ms)


@dramatiq.actor(broker=broker, queue_name=QUEUE, max_retries=0)
def sweep() -> None:
    sweep_lagging(get_runtime(), enqueue)


def enqueue(session_id: str, *, retry_failed: bool = False) -> None:
    sync_session.send(session_id, retry_failed=retry_failed)

