"""The session, person, channel and action a log line is about, as structured fields.

A log shipper filters on ``session_id`` and ``user_id``, not on words inside a
message. The engine binds them around each reconcile and each action; the
JSON formatter (:mod:`sync.engine.jsonlog`) adds whatever is bound to every line
written meanwhile, from that thread. Context variables keep worker threads apart.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

#: The structured fields, in the order they appear in a JSON line.
FIELDS = ("session_id", "user_id", "channel", "action")

_bound: ContextVar[dict[str, str]] = ContextVar("calsync_log_fields", default={})  # noqa: B039 (never mutated)


@contextmanager
def bound(**fields: str | None) -> Iterator[None]:
    """Within the block, every log line of this thread carries these fields (None leaves one out)."""
    token = _bound.set({**_bound.get(), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _bound.reset(token)


def current() -> dict[str, str]:
    return dict(_bound.get())
