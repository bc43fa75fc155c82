"""The two lifecycles: every state a copy or a calendar connection can be in, and every move allowed.  (pure)

A placement is one person's copy of one session through one channel at one
address. Its state says what calsync knows about that copy; ``live`` says
whether a copy may exist out there. Every write of a state goes through
:func:`check` (in :mod:`sync.store.placements`), so a move that is not in
:data:`TRANSITIONS` is a bug caught where it happens, not a row nobody can
explain later::

    pending ──► sending ──► placed ◄──┐
       ▲           │  ├──► withdrawn  │ (a later change, a resync, a reconnect)
       │           │  ├──► retrying ──┤
       │           │  ├──► failed ────┤ (long backoff while upcoming; any new intent re-arms it)
       │           │  ├──► held ──────┤ (calsync's configuration, not the person's: resumes once fixed)
       │           │  ├──► stranded ──┤ (a copy behind credentials that died: waits for a reconnect)
       │           │  └──► drift ─────┘ (the person deleted the event themselves)
       └───────────┘  every state but sending ──► sending when the plan acts again

Settled states are the ones nothing will change until the session, the
person's routing or a timer does: ``placed`` and ``withdrawn``. Everything
else is listed by ``calsync status`` with its reason.

An integration (a person's connected calendar) has a lifecycle of its own,
:class:`Link`, written only through :func:`sync.store.integrations.move`::

    active ──► needs_reconnect ──► disconnected      (the grant died; support disconnected it)
      │  ▲            │                  ▲
      │  └────────────┴──── reconnect ───┤
      └──► disconnecting ────────────────┘            (copies withdrawn, then the token revoked)
"""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    PLACED = "placed"
    WITHDRAWN = "withdrawn"
    RETRYING = "retrying"
    FAILED = "failed"
    HELD = "held"
    STRANDED = "stranded"
    DRIFT = "drift"


#: What each state means, for ``status``, ``sessions show`` and the docs.
MEANING: dict[State, str] = {
    State.PENDING: "planned, not tried yet",
    State.SENDING: "an attempt is in flight (or its worker died mid-call: outcome unknown)",
    State.PLACED: "the copy shows the session as it was placed",
    State.WITHDRAWN: "no copy exists",
    State.RETRYING: "a transient failure; retried with backoff",
    State.FAILED: "attempts used up; retried on a long backoff while upcoming, and at once on any new change",
    State.HELD: "calsync's own configuration is at fault (OAuth client, secret keys); resumes once fixed",
    State.STRANDED: "a copy sits behind credentials that died; moved or removed once the person reconnects",
    State.DRIFT: "the person deleted the event; the next change or a resync places it again",
}

#: Settled: nothing is owed to this copy until the session or the routing changes.
SETTLED = frozenset({State.PLACED, State.WITHDRAWN})
#: States that need a person whatever else is going on (``calsync status`` lists them as problems).
PROBLEM_STATES = (State.FAILED, State.DRIFT, State.HELD, State.STRANDED)

#: Never the target of a move except from ``sending`` (an outcome), or by the planner.
_OUTCOMES = frozenset({State.PLACED, State.WITHDRAWN, State.RETRYING, State.FAILED, State.HELD,
                       State.STRANDED, State.DRIFT})

TRANSITIONS: dict[State, frozenset[State]] = {
    State.PENDING: frozenset({State.SENDING, State.WITHDRAWN}),
    # Sending again: the worker of the previous attempt died mid-call.
    State.SENDING: _OUTCOMES | {State.SENDING},
    # From a resting state the only moves are a new attempt, or (for a copy nobody
    # wants any more that never reached anyone) settling as withdrawn; diagnose may
    # find a placed copy drifted, and a dead token strands what is there.
    **{s: frozenset({State.SENDING, State.WITHDRAWN, State.STRANDED, State.DRIFT})
       for s in _OUTCOMES},
}


class IllegalTransition(RuntimeError):
    """A bug: code tried a move the lifecycle does not have."""


def check(current: str, to: State) -> State:
    """``to`` if the lifecycle allows ``current → to``; raises otherwise.

    Raises:
      IllegalTransition: naming both states.
    """
    if to not in TRANSITIONS[State(current)]:
        raise IllegalTransition(f"placement cannot go from {current} to {to}")
    return to


class Link(StrEnum):
    """The status of a person's connected calendar (an integration)."""

    ACTIVE = "active"
    NEEDS_RECONNECT = "needs_reconnect"
    DISCONNECTING = "disconnecting"
    DISCONNECTED = "disconnected"


LINK_MEANING: dict[Link, str] = {
    Link.ACTIVE: "the person's sessions go to this calendar",
    Link.NEEDS_RECONNECT: "the grant died; their sessions go by email until they reconnect",
    Link.DISCONNECTING: "routed to email; calsync still withdraws the events it placed, then revokes",
    Link.DISCONNECTED: "credentials wiped; nothing more is done with this calendar",
}

#: Statuses whose credentials still work: ``disconnecting`` routes the person to
#: email but can still delete the events it placed.
USABLE_LINKS = (Link.ACTIVE, Link.DISCONNECTING)

#: A (re)connect makes any integration active again; otherwise a connection only winds down.
LINK_TRANSITIONS: dict[Link, frozenset[Link]] = {
    Link.ACTIVE: frozenset({Link.ACTIVE, Link.NEEDS_RECONNECT, Link.DISCONNECTING}),
    Link.NEEDS_RECONNECT: frozenset({Link.ACTIVE, Link.DISCONNECTED}),
    Link.DISCONNECTING: frozenset({Link.ACTIVE, Link.DISCONNECTED}),
    Link.DISCONNECTED: frozenset({Link.ACTIVE}),
}


def check_link(current: str, to: Link) -> Link:
    """``to`` if an integration may go ``current → to``; raises otherwise.

    Raises:
      IllegalTransition: naming both statuses.
    """
    if to not in LINK_TRANSITIONS[Link(current)]:
        raise IllegalTransition(f"integration cannot go from {current} to {to}")
    return to
