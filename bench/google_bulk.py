"""Google bulk-change benchmark against the local Calendar emulator with its quotas on.

    PYTHONPATH=. .venv/bin/python -m bench.google_bulk [--placements N] [--accounts A]
        [--workers T] [--window SECONDS] [--per-user L] [--per-project P]
        [--quota redis|memory] [--db URL]

Issue 3, "Speed (benchmark, not test)". :mod:`bench.harness` runs the two phases (create, then the
measured bulk reschedule) and prints the figures; this file holds what is Google's: the
:class:`sync.testing.emulators.google.GoogleEmulator` with its quotas ON at the very limits and window the
client is configured with (``google_quota_per_user``, ``google_quota_per_project``,
``quota_window_seconds``), and the quota bound where a per-user and a per-project limit hold at once.
"""

from __future__ import annotations

import math
import sys
from typing import Any

from bench import harness
from bench.harness import window_bound

#: Google's documented Calendar API quotas, which the defaults below scale down.
GOOGLE_PER_USER, GOOGLE_PER_PROJECT, GOOGLE_WINDOW = 600, 10_000, 60.0


def quota_bound(n: int, accounts: int, per_user: int, per_project: int, window: float) -> tuple[float, float, float]:
    """(bound, per-user bound, per-project bound) for ``n`` writes spread evenly over ``accounts``.

    Each account gets ceil(n / accounts) writes and has its own window of ``per_user``; all
    ``n`` share the project window of ``per_project``. Both must hold, so the larger of the
    two bounds binds.
    """
    user = window_bound(math.ceil(n / accounts), per_user, window)
    project = window_bound(n, per_project, window)
    return max(user, project), user, project


class GoogleBulk(harness.Scenario):
    channel_name, label, calendar_id, error_prefix = "google", "Google", "primary", "Google "
    limited_statuses = frozenset({403, 429})
    default_placements, default_accounts, default_window = 1600, 8, 10.0
    window_help = "quota window in seconds (Google: 60; default 10)"
    limit_options = (("--per-user", 100, "L: requests per account per window (Google: 600; default 100)"),
                     ("--per-project", 400, "P: requests per project per window (Google: 10000; default 400)"))

    def start_emulator(self) -> Any:
        from sync.testing.emulators.google import GoogleEmulator

        emu = GoogleEmulator()
        emu.quota_per_user_per_minute = self.args.per_user
        emu.quota_per_project_per_minute = self.args.per_project
        emu.quota_window = self.args.window
        return emu

    def settings(self, emu: Any) -> dict[str, Any]:
        a = self.args
        return dict(google_client_id="calsync-bench", google_client_secret="bench-secret", google_api_url=emu.url,
                    google_token_url=emu.token_url, google_auth_url=emu.auth_url, google_revoke_url=emu.revoke_url,
                    google_userinfo_url=emu.userinfo_url, google_quota_per_user=a.per_user,
                    google_quota_per_project=a.per_project, quota_window_seconds=a.window)

    def channel(self, settings: Any, store: Any, box: Any, quota: Any) -> Any:
        from sync.providers.google import GoogleChannel

        return GoogleChannel(settings, store, box, quota)

    def scaling(self) -> str:
        a = self.args
        ratio_user, ratio_project = a.per_user / GOOGLE_PER_USER, a.per_project / GOOGLE_PER_PROJECT
        return (f"Google allows {GOOGLE_PER_USER}/user and {GOOGLE_PER_PROJECT}/project per {GOOGLE_WINDOW:g} s; "
                f"this run uses {a.per_user}/user and {a.per_project}/project per {a.window:g} s "
                f"(per-user rate x{ratio_user * GOOGLE_WINDOW / a.window:.2f}, per-project rate "
                f"x{ratio_project * GOOGLE_WINDOW / a.window:.3f}; project/user = {a.per_project / a.per_user:g} "
                f"vs Google's {GOOGLE_PER_PROJECT / GOOGLE_PER_USER:.1f})")

    def setup_detail(self, emu: Any) -> str:
        return (f"emulator quotas {emu.quota_per_user_per_minute}/user {emu.quota_per_project_per_minute}/project "
                f"per {emu.quota_window:g} s answering {emu.quota_status}")

    def bound(self, n: int, per_account: int) -> tuple[dict[str, float], str]:
        a = self.args
        _, user, project = quota_bound(n, a.accounts, a.per_user, a.per_project, a.window)
        return {"per-user": user, "per-project": project}, (
            f"(ceil(n/L) - 1) x W with n = {per_account} per account and L = {a.per_user}, "
            f"n = {n} and P = {a.per_project}, W = {a.window:g} s")

    def first_window(self, n: int) -> int:
        return min(n, self.args.per_project, self.args.accounts * self.args.per_user)

    def event_states(self, emu: Any, account: str) -> list[tuple[str, str | None]]:
        tags = [e.get("extendedProperties", {}).get("private", {}) for e in emu.events(account)]
        return [(t.get("calsyncSession", ""), t.get("calsyncVersion")) for t in tags]


main = harness.entry_point(GoogleBulk)


if __name__ == "__main__":
    sys.exit(main())
