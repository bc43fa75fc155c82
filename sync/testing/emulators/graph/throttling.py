"""Graph's mailbox limits, which calsync's Outlook channel must stay under.

Per (app id, mailbox), as Microsoft documents them: a request arriving while
``max_concurrent_per_mailbox`` (4) are in flight → 429 ``ApplicationThrottled`` "Application is
over its MailboxConcurrency limit." (the wording clients report) with ``Retry-After: 1``; beyond
``requests_per_mailbox_per_window`` (10 000) admitted requests in ``mailbox_window`` (600 s on
``clock``) → 429 ``ApplicationThrottled`` with ``Retry-After`` = seconds until the window frees a
slot. A request is in flight from arrival (before ``latency``) until its answer is ready (a
``timeout_next`` answer's extra delay is not counted). Rejected and faulted requests do not use
the window. ``max_in_flight(email)`` is the highest concurrency ever attempted for a mailbox, the
rejected request included: what a test asserts to show the channel kept to the limit.
"""

from __future__ import annotations

import traceback
from typing import Any

from ..server import EmulatorServer, Fault, Request, Response, SlidingWindow
from .schema import GraphError

__all__ = ["MailboxThrottling"]

_CONCURRENCY_RETRY_AFTER = "1"


class MailboxThrottling(EmulatorServer):
    """Counts requests per (app, mailbox) in flight and in the window; answers 429 over either limit."""

    def __init__(self, **kwargs: Any) -> None:
        self.max_concurrent_per_mailbox: int | None = 4
        self.requests_per_mailbox_per_window: int | None = 10_000
        self.mailbox_window: float = 600.0
        self._window = SlidingWindow(self.mailbox_window)
        self._in_flight: dict[tuple[str, str], int] = {}
        self._peak: dict[tuple[str, str], int] = {}
        super().__init__(**kwargs)

    def max_in_flight(self, email: str) -> int:
        """Highest number of concurrent requests ever attempted for the mailbox (any app)."""
        with self.lock:
            email = self._canonical_mailbox(email)
            return max((n for (_, mb), n in self._peak.items() if mb == email), default=0)

    def in_flight(self, email: str) -> int:
        with self.lock:
            email = self._canonical_mailbox(email)
            return sum(n for (_, mb), n in self._in_flight.items() if mb == email)

    def window_used(self, email: str) -> int:
        """Admitted requests for the mailbox (all apps) in the current window."""
        with self.lock:
            email = self._canonical_mailbox(email)
            now = self.clock()
            self._window.window = self.mailbox_window
            keys = {k for k in self._window.keys() if k.endswith("|" + email)}
            return sum(self._window.used(k, now) for k in keys)

    def reset_throttling(self) -> None:
        with self.lock:
            self._window.clear()
            self._peak.clear()

    # ---- hooks the calendar side provides --------------------------------------------------

    def _canonical_mailbox(self, email_or_oid: str) -> str:
        raise NotImplementedError

    def _graph_response(self, e: GraphError) -> Response:
        raise NotImplementedError

    # ---- admission -------------------------------------------------------------------------

    def _process(self, req: Request) -> tuple[Response | None, Fault | None]:
        # Concurrency is counted from arrival, so classify (cheap: path + token) before the base
        # class sleeps ``latency``; a request over the limit is answered at once and logged here.
        try:
            self.classify(req)
        except Exception:  # noqa: BLE001 - an emulator bug must be visible
            self.internal_errors.append(traceback.format_exc())
        key = (req.info.get("app_id") or "", req.account) if req.kind in ("api", "batch") and req.account else None
        if key is not None:
            with self.lock:
                n = self._in_flight.get(key, 0) + 1
                self._peak[key] = max(self._peak.get(key, 0), n)
                limit = self.max_concurrent_per_mailbox
                over = limit is not None and n > limit
                if not over:
                    self._in_flight[key] = n
            if over:
                req.info["throttled"] = "MailboxConcurrency"
                resp = self._graph_response(GraphError(429, "ApplicationThrottled",
                                                       "Application is over its MailboxConcurrency limit.",
                                                       {"Retry-After": _CONCURRENCY_RETRY_AFTER}))
                self._record(req, resp, None)
                return resp, None
        try:
            return super()._process(req)
        finally:
            if key is not None:
                with self.lock:
                    self._in_flight[key] -= 1

    def _admit(self, req: Request, app_id: str | None, mailbox: str) -> None:
        """Count an admitted request against the mailbox window, or answer 429 when it is full."""
        now = self.clock()
        w = self._window
        w.window = self.mailbox_window
        key = f"{app_id or ''}|{mailbox}"
        if w.would_exceed(key, self.requests_per_mailbox_per_window, now):
            req.info["throttled"] = "MailboxRequests"
            raise GraphError(429, "ApplicationThrottled", "Application is over its MailboxRequests limit.",
                             {"Retry-After": str(w.seconds_until_free(key, now))})
        w.add(key, now)
