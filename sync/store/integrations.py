"""Integration rows: which channel a person uses, and marking dead credentials."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session as Db

from sync.desired import Usable
from sync.store.models import Integration

#: Statuses whose credentials still work: ``disconnecting`` routes the person to
#: email but can still delete the events it placed.
USABLE = ("active", "disconnecting")


def usable(db: Db, user_ids: Iterable[str]) -> list[Usable]:
    """Integrations of these people whose credentials may be used."""
    ids = list(set(user_ids))
    if not ids:
        return []
    rows = db.execute(
        select(Integration.id, Integration.user_id, Integration.provider, Integration.status)
        .where(Integration.user_id.in_(ids), Integration.status.in_(USABLE))
    )
    return [Usable(iid, uid, provider, status == "active") for iid, uid, provider, status in rows]


def mark_needs_reconnect(db: Db, integration_id: int, reason: str) -> None:
    row = db.get(Integration, integration_id)
    if row is not None and row.status == "active":
        row.status, row.status_reason = "needs_reconnect", reason
