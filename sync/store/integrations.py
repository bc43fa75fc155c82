"""Integration rows: which channel a person uses, and marking dead credentials."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session as Db

from sync.store.models import Integration


def active_for(db: Db, user_ids: Iterable[str]) -> dict[str, Integration]:
    """Each person's active integration, if they have one (at most one is active)."""
    ids = list(user_ids)
    if not ids:
        return {}
    rows = db.scalars(
        select(Integration).where(Integration.user_id.in_(ids), Integration.status == "active")
        .order_by(Integration.updated_at)
    )
    return {row.user_id: row for row in rows}


def mark_needs_reconnect(db: Db, integration_id: int, reason: str) -> None:
    row = db.get(Integration, integration_id)
    if row is not None and row.status == "active":
        row.status, row.status_reason = "needs_reconnect", reason
