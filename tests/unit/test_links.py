"""The integration lifecycle: a connection only winds down, and a reconnect revives it from anywhere."""

from __future__ import annotations

import pytest

from sync.core.states import LINK_TRANSITIONS, IllegalTransition, Link, check_link
from sync.store.integrations import move
from sync.store.models import Integration


@pytest.mark.parametrize("start", list(Link))
def test_a_reconnect_makes_any_integration_active_again(start: Link) -> None:
    assert check_link(start, Link.ACTIVE) == Link.ACTIVE


@pytest.mark.parametrize(("start", "to"), [
    (Link.DISCONNECTED, Link.NEEDS_RECONNECT),   # a wiped grant cannot die again
    (Link.DISCONNECTED, Link.DISCONNECTING),
    (Link.NEEDS_RECONNECT, Link.DISCONNECTING),  # a dead grant cannot withdraw anything: it is finished at once
    (Link.DISCONNECTING, Link.NEEDS_RECONNECT),  # dying while disconnecting finishes the disconnect
])
def test_moves_the_lifecycle_does_not_have_are_refused(start: Link, to: Link) -> None:
    assert to not in LINK_TRANSITIONS[start]
    with pytest.raises(IllegalTransition, match=f"from {start} to {to}"):
        check_link(start, to)


def test_disconnected_wipes_the_credentials_and_says_why() -> None:
    row = Integration(user_id="u-1", provider="google", credentials=b"sealed", status=Link.DISCONNECTING)
    move(row, Link.DISCONNECTED, "disconnected by support")
    assert (row.status, row.status_reason, row.credentials) == (Link.DISCONNECTED, "disconnected by support", b"")


def test_an_illegal_move_leaves_the_row_as_it_was() -> None:
    row = Integration(user_id="u-1", provider="google", credentials=b"sealed", status=Link.DISCONNECTED,
                      status_reason="disconnected by support")
    with pytest.raises(IllegalTransition):
        move(row, Link.NEEDS_RECONNECT, "token died")
    assert (row.status, row.status_reason) == (Link.DISCONNECTED, "disconnected by support")
