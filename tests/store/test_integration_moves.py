"""An integration's status moves only through store.integrations.move, inside a transaction."""

from __future__ import annotations

import pytest

from sync.core.states import IllegalTransition, Link
from sync.store.db import Store
from sync.store.integrations import move
from sync.store.models import Integration, Person, WebhookEvent


def _integration(db, status: Link) -> Integration:
    db.add(Person(user_id="u-1", email="u-1@example.com"))
    db.flush()
    row = Integration(user_id="u-1", provider="google", credentials=b"sealed", status=status,
                      status_reason="disconnect requested")
    db.add(row)
    db.flush()
    return row


def test_disconnected_wipes_the_credentials_and_says_why(db_url: str):
    with Store(db_url).tx() as db:
        row = _integration(db, Link.DISCONNECTING)
        move(row, Link.DISCONNECTED, "disconnected by support")
        assert (row.status, row.status_reason, row.credentials) == (Link.DISCONNECTED, "disconnected by support", b"")
        assert [e.type for e in db.query(WebhookEvent)] == ["integration.disconnected"]


def test_an_illegal_move_leaves_the_row_as_it_was(db_url: str):
    with Store(db_url).tx() as db:
        row = _integration(db, Link.DISCONNECTED)
        with pytest.raises(IllegalTransition):
            move(row, Link.NEEDS_RECONNECT, "token died")
        assert (row.status, row.status_reason) == (Link.DISCONNECTED, "disconnect requested")
        assert row.credentials == b"sealed"
        assert db.query(WebhookEvent).count() == 0
