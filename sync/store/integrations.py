"""Integration rows: which channel a person uses, and marking dead credentials."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session as Db

from sync.store.models import Integration

#: Statuses whose credentials still work: ``disconnecting`` routes the person to
#: email but can still delete the events it placed.
USABLE = ("active", "disconnecting")


def usable_for(db: Db, user_ids: Iterable[str]) -> list[Integration]:
    """Integrations of these people whose credentials may be used."""
    ids = list(set(user_ids))
    if not ids:
        return []
    return list(db.scalars(
        select(Integration).where(Integration.user_id.in_(ids), Integration.status.in_(USABLE))
        .order_by(Integration.updated_at)
    ))


def mark_needs_reconnect(db: Db, integration_id: int, reason: str) -> None:
    row = db.get(Integration, integration_id)
    if row is not None and row.status == "active":
        row.status, row.status_reason = "needs_reconnect", reason
