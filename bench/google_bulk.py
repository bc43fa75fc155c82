"""Google bulk-change benchmark against the local Calendar emulator with its quotas on.

    PYTHONPATH=. .venv/bin/python -m bench.google_bulk [--placements N] [--accounts A]
        [--workers T] [--window SECONDS] [--per-user L] [--per-project P]
        [--quota redis|memory] [--db URL]

What it does (issue 3, "Speed (benchmark, not test)"):

1. Starts :class:`sync.emulators.google.GoogleEmulator` with its quotas ON and the very limits
   and window the client is configured with (``google_quota_per_user``,
   ``google_quota_per_project``, ``quota_window_seconds``), migrates a fresh SQLite file DB
   (or ``--db``), imports A Google integrations and books S = N / A sessions whose
   participants are the A connected people, so N placements go to Google.
2. Phase 1 (create): reconciles every session with T worker threads. A reconcile whose report
   asks for ``retry_in_ms`` is re-queued after that delay, behind the work already queued, as
   Dramatiq's ``Retry(delay=...)`` does.
3. Waits one window so both quota windows (client and emulator) are empty again.
4. Phase 2 (measured): reschedules every session (version + 1, one hour later) and reconciles
   them all again; the wall time runs from the first reconcile submitted to the last one done.

It prints figures and never asserts a target: exit status 1 means the bench itself went wrong
(a reconcile crashed for good, a placement failed, or the calendars do not hold what the
sessions say), never that a target was missed.
"""

from __future__ import annotations

import argparse
import heapq
import math
import os
import platform
import shlex
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, TextIO

#: Google's documented Calendar API quotas, which the defaults below scale down.
GOOGLE_PER_USER, GOOGLE_PER_PROJECT, GOOGLE_WINDOW = 600, 10_000, 60.0
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: Dramatiq's crash retries for sync_session (sync.tasks.MAX_CRASH_RETRIES).
MAX_CRASH_RETRIES = 10


# ---- the quota-bound minimum ---------------------------------------------------------------


def window_bound(requests: int, limit: int, window: float) -> float:
    """Shortest possible time between the first and the last of ``requests`` requests when at
    most ``limit`` may start in any sliding ``window``-second span.

    The first ``limit`` can all go at t=0; request number ``limit + 1`` must wait until the
    first one leaves the window (t=W), and so on: request k (from 0) can go no earlier than
    ``(k // limit) * W``. The last one, k = n - 1, therefore goes at
    ``((n - 1) // limit) * W == (ceil(n / limit) - 1) * W`` at the earliest. Bursts are
    assumed instant, so real runs always take a little longer (the last burst's own duration).
    """
    if requests <= 0:
        return 0.0
    return (math.ceil(requests / limit) - 1) * window


def quota_bound(n: int, accounts: int, per_user: int, per_project: int, window: float) -> tuple[float, float, float]:
    """(bound, per-user bound, per-project bound) for ``n`` writes spread evenly over ``accounts``.

    Each account gets ceil(n / accounts) writes and has its own window of ``per_user``; all
    ``n`` share the project window of ``per_project``. Both must hold, so the larger of the
    two bounds binds.
    """
    user = window_bound(math.ceil(n / accounts), per_user, window)
    project = window_bound(n, per_project, window)
    return max(user, project), user, project


# ---- an in-process stand-in for the Dramatiq worker ----------------------------------------


class MeteredQuota:
    """Wraps the real quota backend to count what the client's limiter did; changes nothing."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self._lock = threading.Lock()
        self.takes = self.refusals = 0
        self.waited = 0.0  # sum of the waits the backend announced (callers sleep these or give up)

    def take(self, windows: Sequence[Any]) -> float:
        wait = self.inner.take(windows)
        with self._lock:
            self.takes += 1
            if wait > 0:
                self.refusals += 1
                self.waited += wait
        return wait

    def enter(self, key: str, limit: int, ttl: float) -> str | None:
        return self.inner.enter(key, limit, ttl)

    def leave(self, key: str, token: str) -> None:
        self.inner.leave(key, token)

    def reset(self) -> None:
        with self._lock:
            self.takes = self.refusals = 0
            self.waited = 0.0


class NoEmail:
    """The email channel; every participant here is on Google, so it should never be called."""

    name = "email"

    def __init__(self) -> None:
        self.calls = 0

    def place(self, target: Any, event: Any) -> Any:
        from sync.channels import Receipt

        self.calls += 1
        return Receipt(external_id=f"email-{target.placement_id}")

    withdraw = place


@dataclass
class PhaseResult:
    wall: float = 0.0
    runs: int = 0           # reconcile calls, retries included
    retries: int = 0        # reconciles re-queued because the report asked for retry_in_ms
    retry_delay_ms: list[int] = field(default_factory=list)
    crashes: list[str] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    counts: Counter[str] = field(default_factory=Counter)


class InProcessWorker:
    """T threads running ``sync.reconcile.reconcile`` like ``sync.tasks.sync_session``.

    A report with ``retry_in_ms`` goes back to the end of the queue after that delay
    (Dramatiq's delay queue); a crash is retried with exponential backoff from
    ``retry_min_backoff_ms``, at most MAX_CRASH_RETRIES times (Dramatiq's Retries middleware).
    """

    def __init__(self, rt: Any, threads: int) -> None:
        self.rt = rt
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="bench-worker")
        self._cond = threading.Condition()
        self._outstanding = 0
        self._timers: list[tuple[float, int, str, int]] = []
        self._seq = 0
        self._stop = False
        self._timer_thread = threading.Thread(target=self._timer_loop, name="bench-delay-queue", daemon=True)
        self._timer_thread.start()
        self.result = PhaseResult()

    def _timer_loop(self) -> None:
        with self._cond:
            while not self._stop:
                now = time.monotonic()
                while self._timers and self._timers[0][0] <= now:
                    _, _, sid, crashes = heapq.heappop(self._timers)
                    self.pool.submit(self._run, sid, crashes)
                timeout = self._timers[0][0] - now if self._timers else None
                self._cond.wait(timeout)

    def _later(self, delay_s: float, sid: str, crashes: int) -> None:
        with self._cond:
            self._seq += 1
            heapq.heappush(self._timers, (time.monotonic() + delay_s, self._seq, sid, crashes))
            self._cond.notify_all()

    def _run(self, sid: str, crashes: int = 0) -> None:
        from sync.reconcile import reconcile

        res = self.result
        try:
            report = reconcile(self.rt, sid)
        except Exception as exc:  # a crash: Dramatiq retries it with backoff
            with self._cond:
                res.runs += 1
                res.crashes.append(f"{sid}: {type(exc).__name__}: {exc}")
            if crashes + 1 < MAX_CRASH_RETRIES:
                self._later(self.rt.settings.retry_min_backoff_ms / 1000 * 2 ** crashes, sid, crashes + 1)
                return
            self._done()
            return
        with self._cond:
            res.runs += 1
            res.counts.update(report.counts)
            for err in report.errors:
                res.errors[_error_kind(err)] += 1
            if report.retry_in_ms is not None:
                res.retries += 1
                res.retry_delay_ms.append(report.retry_in_ms)
        if report.retry_in_ms is not None:
            self._later(report.retry_in_ms / 1000, sid, crashes)
            return
        self._done()

    def _done(self) -> None:
        with self._cond:
            self._outstanding -= 1
            self._cond.notify_all()

    def run_all(self, session_ids: Sequence[str]) -> PhaseResult:
        """Reconcile every session until none asks to come back; returns the phase's figures."""
        self.result = PhaseResult()
        start = time.monotonic()
        with self._cond:
            self._outstanding += len(session_ids)
        for sid in session_ids:
            self.pool.submit(self._run, sid)
        with self._cond:
            while self._outstanding > 0:
                self._cond.wait()
        self.result.wall = time.monotonic() - start
        return self.result

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._timer_thread.join(timeout=5)
        self.pool.shutdown(wait=True)


def _error_kind(err: str) -> str:
    """Groups a report error such as ``u-3/google: Google 403 userRateLimitExceeded while ...``."""
    text = err.split(": ", 1)[-1]
    if text.startswith("client-side quota spent"):
        return "client quota wait > MAX_INLINE_WAIT (Throttled)"
    if text.startswith("Google "):
        return " ".join(text.split(" while ")[0].split()[:3])
    return text[:60]


# ---- set-up ----------------------------------------------------------------------------------


def _session(i: int, version: int, people: Sequence[tuple[str, str]], shift_hours: int = 0) -> dict[str, Any]:
    start = datetime(2027, 1, 4, 9, tzinfo=timezone.utc) + timedelta(hours=2 * i + shift_hours)
    return {
        "id": f"bench-{i:06d}",
        "version": version,
        "title": f"Bench session {i}",
        "program": "Bench",
        "start": start.isoformat(),
        "end": (start + timedelta(hours=1)).isoformat(),
        "timezone": "Europe/Berlin",
        "meeting_url": f"https://meet.example/{i}",
        "agenda_html": f"<p>Agenda {i}, version {version}</p>",
        "view_url": f"https://platform.example/sessions/bench-{i:06d}",
        "participants": [{"user_id": uid, "email": email, "name": uid, "role": "participant"}
                         for uid, email in people],
    }


def _writes(log: Sequence[Any]) -> list[Any]:
    return [r for r in log if r.kind == "api" and r.method in WRITE_METHODS]


def _rate_limited(log: Sequence[Any]) -> int:
    return sum(1 for r in log if r.kind == "api" and r.status in (403, 429))


def _fmt_ratio(measured: float, bound: float) -> str:
    return f"{measured / bound:.3f}" if bound > 0 else "n/a (everything fits in one window)"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.google_bulk", description=__doc__.split("\n\n")[0])
    p.add_argument("--placements", type=int, default=1600,
                   help="N: Google placements changed in phase 2 (default 1600)")
    p.add_argument("--accounts", type=int, default=8,
                   help="A: connected Google accounts; every session has all A (default 8)")
    p.add_argument("--workers", type=int, default=8, help="T: worker threads (default 8, Dramatiq's default)")
    p.add_argument("--window", type=float, default=10.0, help="quota window in seconds (Google: 60; default 10)")
    p.add_argument("--per-user", type=int, default=100,
                   help="L: requests per account per window (Google: 600; default 100)")
    p.add_argument("--per-project", type=int, default=400,
                   help="P: requests per project per window (Google: 10000; default 400)")
    p.add_argument("--quota", choices=("redis", "memory"), default="redis",
                   help="client-side quota backend (default redis)")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/14",
                   help="Redis for --quota redis; FLUSHED at start and end")
    p.add_argument("--db", default=None, help="database URL (default: a SQLite file in a temp dir)")
    p.add_argument("--retry-min-ms", type=int, default=None,
                   help="override retry_min_backoff_ms (default: the production setting)")
    return p


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    out = out or sys.stdout
    args = _parser().parse_args(argv)
    if args.placements < 1 or args.accounts < 1 or args.workers < 1 or args.per_user < 1 or args.per_project < 1:
        _parser().error("--placements, --accounts, --workers, --per-user and --per-project must be >= 1")
    sessions_n = math.ceil(args.placements / args.accounts)
    n = sessions_n * args.accounts

    def say(line: str = "") -> None:
        print(line, file=out, flush=True)

    from sync import api, integrations
    from sync.config import Settings
    from sync.crypto import CredentialBox, new_key
    from sync.emulators.google import GoogleEmulator
    from sync.providers.google import GoogleChannel
    from sync.quota import MAX_INLINE_WAIT, MemoryQuota, RedisQuota
    from sync.runtime import Runtime
    from sync.store.db import Store
    from sync.store.migrate import upgrade

    say(f"command: PYTHONPATH=. {os.path.basename(sys.executable)} -m bench.google_bulk {shlex.join(argv)}".rstrip())
    try:
        cores = f"{len(os.sched_getaffinity(0))} usable of {os.cpu_count()}"
    except AttributeError:  # not Linux
        cores = str(os.cpu_count())
    say(f"environment: {cores} cores, {platform.python_implementation()} {platform.python_version()}, "
        f"{platform.system()} {platform.release()} {platform.machine()}")
    ratio_user, ratio_project = args.per_user / GOOGLE_PER_USER, args.per_project / GOOGLE_PER_PROJECT
    say(f"scaling: Google allows {GOOGLE_PER_USER}/user and {GOOGLE_PER_PROJECT}/project per {GOOGLE_WINDOW:g} s; "
        f"this run uses {args.per_user}/user and {args.per_project}/project per {args.window:g} s "
        f"(per-user rate x{ratio_user * GOOGLE_WINDOW / args.window:.2f}, per-project rate "
        f"x{ratio_project * GOOGLE_WINDOW / args.window:.3f}; project/user = {args.per_project / args.per_user:g} "
        f"vs Google's {GOOGLE_PER_PROJECT / GOOGLE_PER_USER:.1f}), same sliding-window semantics on both sides")
    if n != args.placements:
        say(f"note: {args.placements} placements rounded up to {n} = {sessions_n} sessions x {args.accounts} accounts")

    tmp = tempfile.TemporaryDirectory(prefix="calsync-bench-")
    db_url = args.db or f"sqlite:///{tmp.name}/bench.db"
    redis_client = None
    worker: InProcessWorker | None = None
    emu = GoogleEmulator()
    try:
        emu.quota_per_user_per_minute = args.per_user
        emu.quota_per_project_per_minute = args.per_project
        emu.quota_window = args.window
        upgrade(db_url)
        if args.quota == "redis":
            import redis

            redis_client = redis.Redis.from_url(args.redis_url)
            redis_client.flushdb()
            backend: Any = RedisQuota(redis_client)
        else:
            backend = MemoryQuota()
        metered = MeteredQuota(backend)
        overrides: dict[str, Any] = {}
        if args.retry_min_ms is not None:
            overrides["retry_min_backoff_ms"] = args.retry_min_ms
        settings = Settings(
            database_url=db_url, broker_url="memory://", mail_from="sessions@calsync.example",
            smtp_url="file:///nonexistent", secret_keys=new_key(),
            google_client_id="calsync-bench", google_client_secret="bench-secret", google_api_url=emu.url,
            google_token_url=emu.token_url, google_auth_url=emu.auth_url, google_revoke_url=emu.revoke_url,
            google_userinfo_url=emu.userinfo_url,
            google_quota_per_user=args.per_user, google_quota_per_project=args.per_project,
            quota_window_seconds=args.window, **overrides)
        email = NoEmail()
        box = CredentialBox([k.get_secret_value() for k in settings.secret_keys])
        rt = Runtime(settings, Store(db_url), channels=lambda s, st: {
            "email": email, "google": GoogleChannel(s, st, box, metered)})
        say(f"setup: db {db_url.split('?')[0]}, quota backend {args.quota}, {args.workers} worker threads, "
            f"MAX_INLINE_WAIT {MAX_INLINE_WAIT:g} s, retry_min_backoff_ms {settings.retry_min_backoff_ms}, "
            f"emulator quotas {emu.quota_per_user_per_minute}/user {emu.quota_per_project_per_minute}/project "
            f"per {emu.quota_window:g} s answering {emu.quota_status}")

        people = [(f"u-{j:03d}", f"bench{j:03d}@example.com") for j in range(args.accounts)]
        imported = integrations.import_integrations(rt, [
            {"user_id": uid, "provider": "google", "account_email": mail, "calendar_id": "primary",
             "refresh_token": emu.add_user(mail)} for uid, mail in people], enqueue=lambda sid: None)
        bad = [r for r in imported if not r.ok]
        if bad:
            raise RuntimeError(f"integration import failed: {bad}")
        ids = [f"bench-{i:06d}" for i in range(sessions_n)]
        for i in range(sessions_n):
            result = api.upsert_session(_session(i, 1, people), rt=rt, enqueue=False)
            if not result.ok:
                raise RuntimeError(f"booking session {i} failed: {result}")

        worker = InProcessWorker(rt, args.workers)
        bound, bound_user, bound_project = quota_bound(n, args.accounts, args.per_user, args.per_project, args.window)
        say(f"N = {n} placements ({sessions_n} sessions x {args.accounts} Google accounts)")
        say(f"quota-bound minimum for N writes: {bound:.2f} s = max(per-user {bound_user:.2f} s, "
            f"per-project {bound_project:.2f} s); (ceil(n/L) - 1) x W with n = {math.ceil(n / args.accounts)} "
            f"per account and L = {args.per_user}, n = {n} and P = {args.per_project}, W = {args.window:g} s")

        failed = False
        for phase, version in (("phase 1 (create)", 1), ("phase 2 (bulk reschedule, measured)", 2)):
            if version == 2:
                # Empty both quota windows, so phase 2 starts as a bulk change after a quiet spell would.
                time.sleep(args.window + 0.5)
                for i in range(sessions_n):
                    result = api.upsert_session(_session(i, 2, people, shift_hours=1), rt=rt, enqueue=False)
                    if not result.ok:
                        raise RuntimeError(f"rescheduling session {i} failed: {result}")
            emu.clear_log()
            metered.reset()
            res = worker.run_all(ids)
            log = emu.request_log
            writes = _writes(log)
            ok_writes = sum(1 for r in writes if r.status is not None and r.status < 300)
            limited = _rate_limited(log)
            span = (writes[-1].time - writes[0].time) if writes else 0.0
            say()
            say(f"== {phase}")
            say(f"  wall time, first reconcile submitted -> last done: {res.wall:.2f} s")
            say(f"  span, first -> last write the emulator received:    {span:.2f} s")
            say(f"  measured / quota bound: {_fmt_ratio(res.wall, bound)} (wall), {_fmt_ratio(span, bound)} (span)"
                + ("   [target <= 1.15]" if version == 2 else ""))
            # The bound counts each window's burst as instant; the client needs real time to send it,
            # and with sliding windows every later window replays the first one's pace.
            first_window = min(n, args.per_project, args.accounts * args.per_user)
            ok_times = [r.time for r in writes if r.status is not None and r.status < 300]
            if bound > 0 and len(ok_times) >= first_window:
                burst = ok_times[first_window - 1] - ok_times[0]
                pace = first_window / burst if burst else float("inf")
                say(f"  first-window burst: {first_window} writes took {burst:.2f} s at this machine's pace "
                    f"(~{pace:.0f}/s); bound + burst = {bound + burst:.2f} s, "
                    f"measured / (bound + burst) = {res.wall / (bound + burst):.3f}")
            say(f"  calls per changed placement: {len(writes) / n:.3f} ({len(writes)} writes, {ok_writes} 2xx, "
                f"methods {dict(Counter(r.method for r in writes))})" + ("   [target 1.0]" if version == 2 else ""))
            statuses = Counter(r.status for r in log if r.kind == "api" and r.status in (403, 429))
            say(f"  403/429 answers received: {limited}" + ("   [target 0]" if version == 2 else "")
                + (f" (statuses {dict(statuses)})" if limited else ""))
            delays = res.retry_delay_ms
            say(f"  reconciles run: {res.runs} for {sessions_n} sessions; re-queued with retry_in_ms: {res.retries}"
                + (f" (delay ms min {min(delays)}, max {max(delays)})" if delays else ""))
            say(f"  client limiter: {metered.takes} takes, {metered.refusals} told to wait "
                f"(announced waits total {metered.waited:.1f} s)")
            if res.errors:
                say("  placement errors seen in reports: "
                    + ", ".join(f"{k} x{v}" for k, v in res.errors.most_common()))
            if res.crashes:
                say(f"  CRASHES: {len(res.crashes)}, first: {res.crashes[0]}")
                failed = True
            # Each account must hold exactly one live event per session, at this phase's version.
            for _, mail in people:
                events = emu.events(mail)
                versions = Counter(e.get("extendedProperties", {}).get("private", {}).get("calsyncVersion")
                                   for e in events)
                if len(events) != sessions_n or versions != Counter({str(version): sessions_n}):
                    say(f"  ERROR: {mail} holds {len(events)} events, versions {dict(versions)}; "
                        f"expected {sessions_n} at version {version}")
                    failed = True
                    break
        say()
        say(f"email channel calls: {email.calls} (expected 0); emulator internal errors: {len(emu.internal_errors)}")
        if emu.internal_errors:
            failed = True
        return 1 if failed else 0
    finally:
        if worker is not None:
            worker.close()
        emu.stop()
        if redis_client is not None:
            redis_client.flushdb()
            redis_client.close()
        from sync.store.db import engine_for

        engine_for(db_url).dispose()
        tmp.cleanup()


if __name__ == "__main__":
    sys.exit(main())
