"""Disconnecting a person's calendar: route them to email, withdraw, then revoke."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import select

from sync.core.states import Link
from sync.engine.people import finish_disconnects
from sync.engine.runtime import Runtime
from sync.errors import NotFound
from sync.store import sessions
from sync.store.integrations import move, touch_sessions_of
from sync.store.models import Integration


@dataclass(frozen=True)
class Disconnected:
    """What a disconnect did: the sessions moved to email, and whether calendar copies remain."""

    user_id: str
    sessions: list[str]
    revoked: bool
    #: ``disconnecting`` while copies remain (withdrawn by retries and the sweeper), else ``disconnected``.
    status: str
    remaining: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def disconnect(rt: Runtime, user_id: str, reconcile_now: Callable[[str], object]) -> Disconnected:
    """Withdraw the person's calendar events, then revoke the token, and route them to email.

    The integration goes ``disconnecting`` (a route to email that may still use
    its credentials) together with the re-plan of every session of theirs, in
    one transaction; each session is then reconciled now. The credentials are
    kept until every copy is withdrawn: a copy whose delete failed (a 5xx, a
    timeout) is retried with backoff like any other, and :func:`finish_disconnects`
    — here, and on every sweep — revokes and wipes once nothing is left. A grant
    that is already dead cannot delete anything, so it settles at once.
    """
    with rt.store.tx() as db:
        rows = list(db.scalars(select(Integration).where(Integration.user_id == user_id,
                                                         Integration.status != Link.DISCONNECTED)))
        if not rows:
            raise NotFound(f"{user_id!r} has no connected calendar")
        for row in rows:
            if row.status == Link.ACTIVE:
                move(row, Link.DISCONNECTING, "disconnect requested")
            elif row.status == Link.NEEDS_RECONNECT:
                move(row, Link.DISCONNECTED, "disconnected by support")
        touch_sessions_of(db, user_id)
        ids = sessions.for_user(db, user_id)
    for session_id in ids:
        reconcile_now(session_id)
    # One person may have two integrations disconnecting (one replaced earlier, one now).
    done = finish_disconnects(rt, user_id)
    remaining = sum(d.remaining for d in done)
    status = Link.DISCONNECTING if remaining else Link.DISCONNECTED
    return Disconnected(user_id, ids, any(d.revoked for d in done), status, remaining)
