"""Integration rows: which channel a person uses, and marking dead credentials."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select, update
from sqlalchemy.orm import Session as Db
from sqlalchemy.orm import object_session

from sync.core.plan import Usable
from sync.core.states import USABLE_LINKS, Link, check_link
from sync.errors import AuthError, PermanentError
from sync.store import webhooks
from sync.store.models import Integration, SessionRow


def usable(db: Db, user_ids: Iterable[str]) -> list[Usable]:
    """Integrations of these people whose credentials may be used."""
    ids = list(set(user_ids))
    if not ids:
        return []
    rows = db.execute(
        select(Integration.id, Integration.user_id, Integration.provider, Integration.status)
        .where(Integration.user_id.in_(ids), Integration.status.in_(USABLE_LINKS))
    )
    return [Usable(iid, uid, provider, status == Link.ACTIVE) for iid, uid, provider, status in rows]


def credentials_of(db: Db, integration_id: int | None, provider: str) -> tuple[bytes, str, str | None]:
    """(sealed credentials, account, calendar id) for a channel about to act.

    Raises:
      PermanentError: no integration was given (a planning bug, not the person's).
      AuthError: the integration is gone, so the person falls back to email.
    """
    if integration_id is None:
        raise PermanentError(f"no {provider} integration given for this placement")
    row = db.get(Integration, integration_id)
    if row is None:
        raise AuthError(f"the {provider} integration was removed")
    return row.credentials, row.account_email or row.user_id, row.calendar_id


def mark_dead(db: Db, integration_id: int, reason: str) -> None:
    """The provider says only the person can revive this grant.

    An active integration waits for a reconnect; one being disconnected (or
    replaced by another provider) is finished — its copies cannot be removed
    any more, and retrying the dead grant would only loop.
    """
    row = db.get(Integration, integration_id)
    if row is None:
        return
    if row.status == Link.ACTIVE:
        move(row, Link.NEEDS_RECONNECT, reason)
    elif row.status == Link.DISCONNECTING:
        move(row, Link.DISCONNECTED, f"token died while disconnecting: {reason}")


def move(row: Integration, to: Link, reason: str | None) -> None:
    """The one way an integration's status changes; ``disconnected`` wipes the credentials.

    The platform's event for the move (connected, needs_reconnect, disconnected)
    and a reconnect email owed are recorded in the row's own transaction.

    Raises:
      IllegalTransition: a move the lifecycle does not have (a bug).
    """
    was = row.status
    row.status, row.status_reason = check_link(row.status, to), reason
    if to == Link.DISCONNECTED:
        row.credentials = b""
    _announce(row, was, to, reason)


def _announce(row: Integration, was: str, to: Link, reason: str | None) -> None:
    db = object_session(row)
    if db is None:
        raise RuntimeError("an integration moves only inside a transaction (its event is written with it)")
    data = {"user_id": row.user_id, "provider": row.provider}
    if to == Link.ACTIVE:
        webhooks.record(db, webhooks.CONNECTED, {**data, "account": row.account_email})
    elif to == Link.NEEDS_RECONNECT and was != Link.NEEDS_RECONNECT:
        webhooks.record(db, webhooks.NEEDS_RECONNECT, {**data, "reason": reason})
        webhooks.record(db, webhooks.RECONNECT_EMAIL, {**data, "integration_id": row.id})
    elif to == Link.DISCONNECTED and was != Link.DISCONNECTED:
        webhooks.record(db, webhooks.DISCONNECTED, {**data, "reason": reason})


def touch_sessions_of(db: Db, user_id: str) -> int:
    """Record a routing change of this person as intent for each of their sessions.

    Their channel changed (a token died, a calendar was connected, imported or
    disconnected), so every session they are in or still hold a copy of must be
    re-planned. Raising each session's revision in the caller's transaction
    makes that intent durable: the sweeper sees the sessions lagging even if
    every queued message is lost. Returns how many sessions were touched.
    """
    from sync.store.sessions import for_user_query

    result = db.execute(update(SessionRow).where(SessionRow.id.in_(for_user_query(user_id)))
                        .values(revision=SessionRow.revision + 1).execution_options(synchronize_session=False))
    return int(result.rowcount or 0)
