"""Where a grant becomes an integration row: sealed, one calendar per person, and re-planned."""

from __future__ import annotations

from sqlalchemy import select

from sync.core.states import Link
from sync.engine.runtime import Runtime, credential_box
from sync.providers.connector import Grant
from sync.store.db import utcnow
from sync.store.integrations import move, touch_sessions_of
from sync.store.models import Integration, Person


def save_grant(rt: Runtime, user_id: str, provider: str, grant: Grant, *, account_email: str | None = None,
               calendar_id: str | None = None) -> int:
    """Store ``grant`` as the person's active integration; returns its id.

    ``account_email`` (the platform's word) wins over the grant's own account.
    """
    sealed = credential_box(rt.settings).seal(grant.secret)
    account_email = account_email or grant.account_email
    with rt.store.tx() as db:
        # Insert-or-nothing, not get-then-add: a booking may create the same person at this
        # moment, and a known email (the platform's) must not be overwritten by the account's.
        from sqlalchemy.dialects import postgresql, sqlite

        insert = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}[db.get_bind().dialect.name]
        db.execute(insert(Person).values(user_id=user_id, email=account_email or "", updated_at=utcnow())
                   .on_conflict_do_nothing(index_elements=[Person.user_id]))
        row = db.scalars(select(Integration).where(Integration.user_id == user_id,
                                                   Integration.provider == provider)).one_or_none()
        if row is None:
            row = Integration(user_id=user_id, provider=provider, credentials=sealed)
            db.add(row)
        # One calendar per person: connecting one provider retires the other.
        for other in db.scalars(select(Integration).where(Integration.user_id == user_id,
                                                          Integration.provider != provider,
                                                          Integration.status == Link.ACTIVE)):
            move(other, Link.DISCONNECTING, f"replaced by {provider}")
        row.account_email = account_email or row.account_email
        row.calendar_id = calendar_id or row.calendar_id or ("primary" if provider == "google" else None)
        row.credentials = sealed
        move(row, Link.ACTIVE, None)
        row.updated_at = utcnow()
        db.flush()
        # The person's route changed: every session of theirs owes a re-plan, stored
        # with the change itself so a lost message cannot lose it.
        touch_sessions_of(db, user_id)
        return row.id
