"""Retry timing shared by every channel.  (pure)

Exponential backoff with full jitter, capped, and never shorter than what the
far side asked for in Retry-After: retrying sooner only earns another 429.
"""

from __future__ import annotations

import random


def backoff_ms(attempt: int, *, min_ms: int, max_ms: int, retry_after_s: float | None = None,
               rng: random.Random | None = None) -> int:
    """Delay before attempt number ``attempt + 1`` (``attempt`` counts failures so far, from 1).

    Parameters:
      attempt: failures so far, at least 1.
      min_ms / max_ms: the first delay's floor and the cap, in milliseconds.
      retry_after_s: the server's Retry-After in seconds, honoured as a floor.
    """
    rng = rng or random.Random()
    ceiling = min(max_ms, min_ms * 2 ** max(0, attempt - 1))
    delay = rng.uniform(min_ms, max(min_ms, ceiling))
    if retry_after_s is not None:
        delay = max(delay, retry_after_s * 1000)
    return int(min(delay, max(max_ms, (retry_after_s or 0) * 1000)))


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header, which may be delta-seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from datetime import datetime, timezone
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


#: Wait after a provider's 403/429 that gave no Retry-After, in seconds (Google's
#: documented backoff starts at 1 s plus up to 1 s of jitter).
RATE_LIMIT_FLOOR = 1.0


def rate_limit_delay(retry_after: float | None, rng: random.Random | None = None) -> float:
    """Seconds to wait after being rate-limited: what the provider asked, or 1–2 s.

    Rate-limit answers are not failures of the placement, so they spend no
    attempt; retries cannot storm because every call first passes the
    client-side quota, which paces them whatever happens.
    """
    if retry_after is not None:
        return retry_after
    return RATE_LIMIT_FLOOR + (rng or random.Random()).random()


#: First wait before a failed copy (attempts used up) is tried again, in milliseconds.
FAILED_RETRY_MIN_MS = 60 * 60 * 1000
#: Longest wait between tries of a failed copy, in milliseconds.
FAILED_RETRY_MAX_MS = 24 * 60 * 60 * 1000


def failed_retry_ms(extra_failures: int) -> int:
    """Delay before a failed copy is tried again: 1 h, doubling, capped at a day.

    A failure is never terminal while the session is ahead (an SMTP outage
    outlasts six quick retries), but a copy that keeps failing must not cost
    more than a few calls a day. ``extra_failures`` counts failures past the
    attempt budget, from 0.
    """
    return min(FAILED_RETRY_MAX_MS, FAILED_RETRY_MIN_MS * 2 ** min(max(0, extra_failures), 16))
