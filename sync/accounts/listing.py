"""The integrations support staff look at."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import select

from sync.engine.runtime import Runtime
from sync.store.models import Integration


@dataclass(frozen=True)
class IntegrationInfo:
    user_id: str
    provider: str
    account_email: str | None
    calendar_id: str | None
    status: str
    reason: str | None
    updated_at: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def list_integrations(rt: Runtime, status: str | None = None) -> list[IntegrationInfo]:
    with rt.store.tx() as db:
        stmt = select(Integration).order_by(Integration.user_id)
        if status:
            stmt = stmt.where(Integration.status == status)
        return [IntegrationInfo(r.user_id, r.provider, r.account_email, r.calendar_id, r.status, r.status_reason,
                                r.updated_at.isoformat()) for r in db.scalars(stmt)]
