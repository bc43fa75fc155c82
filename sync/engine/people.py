"""What the engine does for a person rather than a session: re-plan all their sessions, and
finish the disconnects whose calendar copies are all withdrawn (on every sweep)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import func, select

from sync.core.states import Link
from sync.engine.runtime import Runtime, credential_box
from sync.errors import CalsyncError
from sync.providers.connector import connector_for
from sync.store import sessions
from sync.store.integrations import move
from sync.store.models import Integration, Placement


def resync_user(rt: Runtime, user_id: str, enqueue: Callable[[str], None]) -> list[str]:
    with rt.store.tx() as db:
        ids = sessions.for_user(db, user_id)
    for session_id in ids:
        enqueue(session_id)
    return ids


@dataclass(frozen=True)
class DisconnectProgress:
    """One disconnecting integration looked at: finished (revoked or not), or copies still to withdraw."""

    user_id: str
    provider: str
    remaining: int
    revoked: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def finish_disconnects(rt: Runtime, user_id: str | None = None) -> list[DisconnectProgress]:
    """Revoke and wipe every ``disconnecting`` integration whose copies are all withdrawn.

    Returns one entry per disconnecting integration looked at: finished (with
    whether the token was revoked) or the number of copies still to withdraw.
    """
    with rt.store.tx() as db:
        stmt = select(Integration).where(Integration.status == Link.DISCONNECTING)
        if user_id is not None:
            stmt = stmt.where(Integration.user_id == user_id)
        pending = [(row.id, row.user_id, row.provider, row.credentials) for row in db.scalars(stmt)]
        live = {(uid, channel): n for uid, channel, n in db.execute(
            select(Placement.user_id, Placement.channel, func.count())
            .where(Placement.live.is_(True), Placement.user_id.in_([p[1] for p in pending]))
            .group_by(Placement.user_id, Placement.channel))}
    results = []
    for iid, uid, provider, sealed in pending:
        remaining = live.get((uid, provider), 0)
        if remaining:
            results.append(DisconnectProgress(uid, provider, remaining, revoked=False))
            continue
        try:
            secret = credential_box(rt.settings).open(sealed)
        except CalsyncError:  # unreadable (or already wiped): nothing we can revoke
            secret = {}
        revoked = bool(secret) and connector_for(rt.settings, provider).revoke(secret)
        with rt.store.tx() as db:
            row = db.get(Integration, iid)
            if row is not None and row.status == Link.DISCONNECTING:
                move(row, Link.DISCONNECTED, "disconnected by support")
        results.append(DisconnectProgress(uid, provider, 0, revoked))
    return results
