"""The sync log: one row per step a worker (or a repair) took, with its result.

It is what ``diagnose`` shows as a person's recent errors and what ``resync --wait``
counts as done; it never decides anything itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session as Db

from sync.core.plan import Action
from sync.store.models import SyncLog


def log(db: Db, session_id: str, action: Action | None, result: str, *, user_id: str | None = None,
        channel: str | None = None, **detail: object) -> None:
    db.add(SyncLog(
        session_id=session_id,
        user_id=action.user_id if action else user_id,
        channel=action.channel if action else channel,
        action=action.kind.value if action else result,
        result=result,
        detail={k: v for k, v in detail.items() if v is not None} or None,
    ))


def mark(db: Db) -> int:
    """The newest row's id: steps logged later have greater ids."""
    return db.scalar(select(func.max(SyncLog.id))) or 0


def steps_since(db: Db, mark_id: int) -> Iterable[tuple[str, str | None, str | None, str, str]]:
    """(session, user, channel, action, result) of every step logged after ``mark_id``, oldest first."""
    return db.execute(select(SyncLog.session_id, SyncLog.user_id, SyncLog.channel, SyncLog.action, SyncLog.result)
                      .where(SyncLog.id > mark_id).order_by(SyncLog.id)).tuples().all()


def recent_errors(db: Db, user_id: str, limit: int = 10) -> list[Any]:
    """The person's latest steps that did not succeed, newest first."""
    return list(db.execute(
        select(SyncLog.at, SyncLog.session_id, SyncLog.channel, SyncLog.action, SyncLog.result, SyncLog.detail)
        .where(SyncLog.user_id == user_id, SyncLog.result != "ok").order_by(SyncLog.id.desc()).limit(limit)))
