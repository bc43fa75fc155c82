"""The integration lifecycle: a connection only winds down, and a reconnect revives it from anywhere."""

from __future__ import annotations

import pytest

from sync.core.states import LINK_TRANSITIONS, IllegalTransition, Link, check_link


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
