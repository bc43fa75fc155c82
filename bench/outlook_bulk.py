"""Outlook bulk-change benchmark against the local Graph emulator with its mailbox limits on.

    PYTHONPATH=. .venv/bin/python -m bench.outlook_bulk [--placements N] [--accounts A]
        [--workers T] [--window SECONDS] [--per-mailbox L] [--concurrent C] [--latency-ms MS]
        [--quota redis|memory] [--db URL]

Issue 4, "Speed (benchmark, not test)". :mod:`bench.harness` runs the two phases (create, then the
measured bulk reschedule) and prints the figures; this file holds what is Outlook's: the
:class:`sync.testing.emulators.graph.GraphEmulator` (real msal and requests over TLS) with the very limits
the client is configured with — at most L requests per mailbox in any W-second window
(``outlook_quota_per_window``, ``outlook_quota_window_seconds``) and C concurrent per mailbox
(``outlook_max_concurrent``) — plus a few milliseconds of latency per request, so that the
concurrency limit is something the client has to respect, not something it never reaches.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from collections.abc import Sequence
from typing import Any

from bench import harness
from bench.harness import window_bound

#: Microsoft Graph's documented Outlook limits per app and mailbox, which the defaults scale down.
GRAPH_PER_MAILBOX, GRAPH_WINDOW, GRAPH_CONCURRENT = 10_000, 600.0, 4


def mailbox_bound(per_mailbox: Sequence[int], limit: int, window: float, concurrent: int,
                  latency: float) -> tuple[float, float, float]:
    """(bound, window bound, concurrency bound) for the given write counts, one per mailbox.

    Mailboxes have separate limits and can be written in parallel, so the busiest one sets the
    pace: its n writes need ``(ceil(n / L) - 1) x W`` (:func:`bench.harness.window_bound`).
    Each request also holds one of the mailbox's C concurrency slots for at least the emulator's
    ``latency`` (it counts a request in flight from arrival until its answer is ready), so one
    mailbox completes at most C / latency requests per second and n of them need at least
    ``n x latency / C`` (exactly ``ceil(n / C) x latency``; the difference is one latency at most).
    Both limits hold at once; the larger binds. With the defaults the window binds by far (800
    writes: 30 s against 1 s); the concurrency bound only matters for slow answers or a large L.
    """
    busiest = max(per_mailbox, default=0)
    by_window = window_bound(busiest, limit, window)
    by_concurrency = busiest * latency / concurrent
    return max(by_window, by_concurrency), by_window, by_concurrency


class OutlookBulk(harness.Scenario):
    channel_name, label, accounts_word, error_prefix = "outlook", "Outlook", "mailboxes", "Graph "
    default_placements, default_accounts, default_window = 1600, 2, 10.0
    window_help = "mailbox window in seconds (Graph: 600; default 10)"

    limit_options = (("--per-mailbox", 200, "L: requests per mailbox per window (Graph: 10000 per 600 s; default 200)"),
                     ("--concurrent", GRAPH_CONCURRENT, "C: concurrent requests per mailbox (Graph: 4; default 4)"))

    @classmethod
    def add_arguments(cls, p: Any) -> None:
        p.add_argument("--latency-ms", type=float, default=5.0,
                       help="the emulator's added latency per request, in ms (default 5)")

    def invalid(self) -> str | None:
        return "--latency-ms must be >= 0" if self.args.latency_ms < 0 else None

    def start_emulator(self) -> Any:
        from sync.testing.emulators.graph import GraphEmulator

        a = self.args
        emu = GraphEmulator()
        emu.requests_per_mailbox_per_window = a.per_mailbox
        emu.mailbox_window = a.window
        emu.max_concurrent_per_mailbox = a.concurrent
        emu.latency = a.latency_ms / 1000
        return emu

    def setup_detail(self, emu: Any) -> str:
        return (f"emulator limits {emu.requests_per_mailbox_per_window}/mailbox per {emu.mailbox_window:g} s and "
                f"{emu.max_concurrent_per_mailbox} concurrent, latency {emu.latency * 1000:g} ms, answering 429")

    def settings(self, emu: Any) -> dict[str, Any]:
        a = self.args
        return dict(ms_client_id="calsync-bench", ms_client_secret="bench-secret", ms_tenant="common",
                    ms_authority_url=emu.authority_url, graph_url=emu.graph_url, ms_ca_bundle=emu.ca_file,
                    outlook_max_concurrent=a.concurrent, outlook_quota_per_window=a.per_mailbox,
                    outlook_quota_window_seconds=a.window)

    def channel(self, settings: Any, store: Any, box: Any, quota: Any) -> Any:
        from sync.providers.outlook import OutlookChannel

        return OutlookChannel(settings, store, box, quota)

    def scaling(self) -> str:
        a = self.args
        rate = a.per_mailbox / a.window / (GRAPH_PER_MAILBOX / GRAPH_WINDOW)
        return (f"Graph allows {GRAPH_PER_MAILBOX} requests per mailbox per {GRAPH_WINDOW:g} s and {GRAPH_CONCURRENT} "
                f"concurrent; this run uses {a.per_mailbox} per {a.window:g} s (per-mailbox rate x{rate:.2f}) and "
                f"{a.concurrent} concurrent, with {a.latency_ms:g} ms emulator latency per request")

    def bound(self, n: int, per_account: int) -> tuple[dict[str, float], str]:
        a = self.args
        _, by_window, by_concurrency = mailbox_bound([per_account] * a.accounts, a.per_mailbox, a.window,
                                                     a.concurrent, a.latency_ms / 1000)
        return {"mailbox window": by_window, "concurrency": by_concurrency}, (
            f"(ceil(n/L) - 1) x W and n x latency / C with n = {per_account} per mailbox (the busiest), "
            f"L = {a.per_mailbox}, W = {a.window:g} s, latency = {a.latency_ms:g} ms, C = {a.concurrent}")

    def first_window(self, n: int) -> int:
        return min(n, self.args.accounts * self.args.per_mailbox)

    def before_phase(self, emu: Any) -> None:
        super().before_phase(emu)
        emu.reset_throttling()  # the windows are empty by now anyway; this restarts max_in_flight

    def limited_detail(self, refused: Sequence[Any]) -> str:
        return f"limits {dict(Counter(r.get('throttled') for r in refused))}"

    def phase_lines(self, emu: Any, log: Sequence[Any], n: int, wall: float) -> list[str]:
        a = self.args
        api = [r for r in log if r.kind == "api"]
        peaks = [emu.max_in_flight(harness.account_email(j)) for j in range(a.accounts)]
        lines = [f"Graph requests of any kind: {len(api)} = {len(api) / n:.3f} per placement "
                 f"(methods {dict(Counter(r.method for r in api))})",
                 f"max in flight per mailbox: {max(peaks, default=0)} (limit {a.concurrent}; per mailbox {peaks})"]
        if len(api) > len(harness.writes(log)):
            # Reads take their place in the mailbox window too (a create looks its event up first),
            # so the writes-only bound above understates what this phase could have done.
            busiest = max(Counter(r.account for r in api).values())
            bound, _, _ = mailbox_bound([busiest], a.per_mailbox, a.window, a.concurrent, a.latency_ms / 1000)
            lines.append(f"with reads: the busiest mailbox took {busiest} requests, bound {bound:.2f} s, "
                         f"measured / that bound = {harness.fmt_ratio(wall, bound)} (wall)")
        return lines

    def event_states(self, emu: Any, account: str) -> list[tuple[str, str | None]]:
        """Graph events carry no version: read it from the agenda ("Agenda i, version v") and
        count it only if the start is that version's too."""
        from sync.providers.outlook_events import TAG_PROPERTY

        states: list[tuple[str, str | None]] = []
        for e in emu.events(account):
            tag = next((p["value"] for p in e["singleValueExtendedProperties"] if p["id"] == TAG_PROPERTY), "")
            agenda = re.search(r"Agenda (\d+), version (\d+)<", e["body"]["content"])
            version = agenda and agenda[2]
            if agenda and not e["start"]["dateTime"].startswith(
                    harness.session_start(int(agenda[1]), int(agenda[2])).strftime("%Y-%m-%dT%H:%M:%S")):
                version = f"{version} at {e['start']['dateTime']}"
            states.append((tag.split("/")[0], version))
        return states


main = harness.entry_point(OutlookBulk)


if __name__ == "__main__":
    sys.exit(main())
