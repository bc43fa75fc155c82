"""What a calendar holds vs what calsync would place there.  (pure)

Support asks "why is this not on my calendar?"; the answer is a list of
differences in plain words, computed from the rendered event and the
provider's copy as each channel reads it back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sync.core.render import RenderedEvent


@dataclass(frozen=True)
class Observed:
    """A provider's copy of one placement, in provider-neutral terms."""

    external_id: str
    title: str
    start: datetime  #: UTC
    end: datetime  #: UTC
    where: str
    cancelled: bool = False


@dataclass(frozen=True)
class Difference:
    kind: str  #: missing | deleted | moved | retitled | relocated | duplicated | unexpected
    detail: str


def compare(expected: RenderedEvent | None, copies: list[Observed]) -> list[Difference]:
    """Differences between the copy calsync wants (None: no copy) and the copies found."""
    live = [c for c in copies if not c.cancelled]
    if expected is None:
        return [Difference("unexpected", f"event {c.external_id} should not exist") for c in live]
    if not live:
        if copies:
            return [Difference("deleted", "the person deleted the event")]
        return [Difference("missing", "no event found on the calendar")]
    diffs: list[Difference] = []
    if len(live) > 1:
        diffs.append(Difference("duplicated", f"{len(live)} copies: {', '.join(c.external_id for c in live)}"))
    got = live[0]
    if (got.start, got.end) != (expected.start, expected.end):
        diffs.append(Difference("moved", f"{got.start.isoformat()}–{got.end.isoformat()} instead of "
                                         f"{expected.start.isoformat()}–{expected.end.isoformat()}"))
    if got.title != expected.title:
        diffs.append(Difference("retitled", f"{got.title!r} instead of {expected.title!r}"))
    if got.where != expected.where:
        diffs.append(Difference("relocated", f"{got.where!r} instead of {expected.where!r}"))
    return diffs
