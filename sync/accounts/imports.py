"""Importing tokens a platform already holds (the contract's import JSON)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, EmailStr, Field, ValidationError, field_validator

from sync.accounts.grants import save_grant
from sync.core.sanitize import has_control_chars
from sync.engine.people import resync_user
from sync.engine.runtime import Runtime
from sync.errors import AuthError, FieldError, InvalidInput
from sync.providers.connector import PROVIDERS, connector_for


class ImportedIntegration(BaseModel):
    """One integration a platform already holds (the contract's import JSON)."""

    model_config = ConfigDict(extra="ignore")

    user_id: str = Field(min_length=1, max_length=200)
    provider: str
    account_email: EmailStr | None = None
    calendar_id: str | None = Field(default=None, max_length=1024)
    refresh_token: str = Field(min_length=1, max_length=4096)

    @field_validator("user_id", "calendar_id")
    @classmethod
    def _single_line(cls, value: str | None) -> str | None:
        # Ids are echoed in reports and stored as text: no CR/LF/tab/NUL may forge a line.
        if value is not None and has_control_chars(value):
            raise ValueError("must be a single line without control characters (CR, LF, tab…)")
        return value


@dataclass(frozen=True)
class ImportResult:
    index: int
    user_id: str | None
    ok: bool
    errors: tuple[FieldError, ...] = ()


def import_integrations(rt: Runtime, items: list[Any], enqueue: Callable[[str], None], *,
                        unqueued: dict[int, str] | None = None) -> list[ImportResult]:
    """Store tokens the platform already holds; each element stands alone.

    Storing an element also records the re-plan of the person's sessions (see
    :func:`~sync.accounts.grants.save_grant`), so its enqueue only wakes a worker early. When a caller passes
    ``unqueued``, a broker that cannot be reached is therefore that element's
    note, not the batch's end: the element is stored and reported, its index
    maps to the broker's error, the next elements are still imported, and the
    sweeper enqueues the sessions once the broker is back. Without
    ``unqueued`` the broker error propagates, as before.
    """
    import redis.exceptions
    from dramatiq.errors import BrokerError

    results = []
    for i, item in enumerate(items):
        prefix = f"[{i}]." if len(items) > 1 else ""
        try:
            if not isinstance(item, dict):
                raise InvalidInput([FieldError("integration", f"expected a JSON object, got {type(item).__name__}")])
            try:
                data = ImportedIntegration.model_validate(item)
            except ValidationError as exc:
                raise InvalidInput([FieldError(".".join(str(p) for p in e["loc"]), e["msg"])
                                    for e in exc.errors()]) from None
            if data.provider not in PROVIDERS:
                reason = f"must be one of {', '.join(PROVIDERS)}, got {data.provider!r}"
                raise InvalidInput([FieldError("provider", reason)])
        except InvalidInput as exc:
            uid = item.get("user_id") if isinstance(item, dict) else None
            results.append(ImportResult(i, uid if isinstance(uid, str) else None, False,
                                        tuple(FieldError(prefix + e.field, e.reason) for e in exc.errors)))
            continue
        try:
            grant = connector_for(rt.settings, data.provider).import_token(data.refresh_token)
        except AuthError as exc:
            results.append(ImportResult(i, data.user_id, False, (FieldError(prefix + "refresh_token", str(exc)),)))
            continue
        save_grant(rt, data.user_id, data.provider, grant, account_email=data.account_email,
                   calendar_id=data.calendar_id)
        try:
            resync_user(rt, data.user_id, enqueue)
        except (BrokerError, redis.exceptions.RedisError, OSError) as exc:
            if unqueued is None:
                raise
            text = str(exc).strip()
            unqueued[i] = text.splitlines()[0] if text else type(exc).__name__
        results.append(ImportResult(i, data.user_id, True))
    return results
