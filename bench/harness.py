"""What the bulk-change benchmarks share: set-up, an in-process worker, timing, the quota bound, printing.

A provider bench (``bench.google_bulk``, ``bench.outlook_bulk``) is a :class:`Scenario`: it starts its
emulator with the same limits the client is configured with, names its channel and settings, its
quota bound and the few figures only it has. :func:`run` does the rest:

1. migrates a fresh database (a SQLite file in a temp dir, or ``--db``), picks the client's quota
   backend (Redis, flushed at start and end, or memory), imports A integrations (emulator accounts)
   and books S = N / A sessions whose participants are the A connected people, so N placements go
   to the provider; email is a counting stub that must stay at 0 calls;
2. phase 1 (create): reconciles every session on T worker threads. A reconcile whose report asks
   for ``retry_in_ms`` is re-queued after that delay, behind the work already queued, as
   Dramatiq's ``Retry(delay=...)`` does; a crash is retried with backoff (``sync.engine.tasks``);
3. waits one window so both quota windows (client and emulator) are empty again;
4. phase 2 (measured): reschedules every session (version 2, one hour later) and reconciles them
   all again; the wall time runs from the first reconcile submitted to the last one done;
5. after each phase checks that every calendar holds exactly one event per session, as it stands.

It prints figures and never asserts a target: exit status 1 means the bench itself went wrong (a
reconcile crashed for good, the calendars do not hold what the sessions say, the emulator failed
internally), never that a target was missed.
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
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, TextIO

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: Dramatiq's crash retries for sync_session (sync.engine.tasks.MAX_CRASH_RETRIES).
MAX_CRASH_RETRIES = 10
FIRST_START = datetime(2027, 1, 4, 9, tzinfo=timezone.utc)


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


def fmt_ratio(measured: float, bound: float) -> str:
    return f"{measured / bound:.3f}" if bound > 0 else "n/a (everything fits in one window)"


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
    """The email channel; every participant here is connected, so it should never be called."""

    name = "email"

    def __init__(self) -> None:
        self.calls = 0

    def place(self, target: Any, event: Any) -> Any:
        from sync.providers.channel import Receipt

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
    """T threads running ``sync.engine.reconcile.reconcile`` like ``sync.engine.tasks.sync_session``.

    A report with ``retry_in_ms`` goes back to the end of the queue after that delay
    (Dramatiq's delay queue); a crash is retried with exponential backoff from
    ``retry_min_backoff_ms``, at most MAX_CRASH_RETRIES times (Dramatiq's Retries middleware).
    ``error_kind`` groups the report errors for printing.
    """

    def __init__(self, rt: Any, threads: int, error_kind: Callable[[str], str]) -> None:
        self.rt = rt
        self.error_kind = error_kind
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
        from sync.engine.reconcile import reconcile

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
                res.errors[self.error_kind(err)] += 1
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


# ---- what a provider bench supplies ----------------------------------------------------------


class Scenario:
    """One provider's side of a bulk-change bench. Subclasses fill in the class attributes and
    the methods that raise NotImplementedError; the others have defaults."""

    channel_name = ""           # the channel's name in the runtime: "google"
    label = ""                  # "Google"
    accounts_word = "accounts"  # what one of the A connected calendars is called in the output
    calendar_id: str | None = None  # the calendar each integration writes to (None: the default one)
    error_prefix = ""           # how the channel's provider errors begin: "Google "
    limited_statuses: frozenset[int] = frozenset({429})
    default_placements, default_accounts, default_window = 1600, 8, 10.0
    window_help = "quota window in seconds"
    #: The provider's limits as options: (flag, default, help); each an int that must be >= 1.
    limit_options: tuple[tuple[str, int, str], ...] = ()

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args

    @classmethod
    def module(cls) -> str:
        """The ``-m`` name printed in the command line: where the subclass lives."""
        return cls.__module__ if cls.__module__ != "__main__" else sys.modules["__main__"].__spec__.name

    @classmethod
    def description(cls) -> str:
        """The first paragraph of the bench module's docstring."""
        return (sys.modules[cls.__module__].__doc__ or "").split("\n\n")[0]

    @classmethod
    def add_arguments(cls, p: argparse.ArgumentParser) -> None:
        """Options beyond ``limit_options`` (emulator knobs), after them."""

    def invalid(self) -> str | None:
        """Why the provider options cannot run, or None."""
        return None

    def start_emulator(self) -> Any:
        raise NotImplementedError

    def settings(self, emu: Any) -> dict[str, Any]:
        """The provider's ``Settings`` fields, pointing at ``emu`` with the bench's limits."""
        raise NotImplementedError

    def channel(self, settings: Any, store: Any, box: Any, quota: Any) -> Any:
        raise NotImplementedError

    def scaling(self) -> str:
        """How this run's limits compare with the provider's documented ones (the ``scaling:`` line)."""
        raise NotImplementedError

    def setup_detail(self, emu: Any) -> str:
        """The end of the ``setup:`` line: the emulator's limits."""
        return ""

    def bound(self, n: int, per_account: int) -> tuple[dict[str, float], str]:
        """The quota-bound minimum for ``n`` writes, ``per_account`` on each calendar: the bound of
        each limit by name (all hold at once, so the largest binds), and the formula with its values."""
        raise NotImplementedError

    def first_window(self, n: int) -> int:
        """How many writes the limits let through at once, in the first window."""
        raise NotImplementedError

    def before_phase(self, emu: Any) -> None:
        """Forget what the emulator counted so far, so a phase's figures are its own."""
        emu.clear_log()

    def limited_detail(self, refused: Sequence[Any]) -> str:
        return f"statuses {dict(Counter(r.status for r in refused))}"

    def phase_lines(self, emu: Any, log: Sequence[Any], n: int, wall: float) -> list[str]:
        """Extra figures printed after the rate-limit line of each phase (``wall``: its wall time)."""
        return []

    def event_states(self, emu: Any, account: str) -> list[tuple[str, str | None]]:
        """(session id, the session version it shows) for every live event in ``account``'s calendar."""
        raise NotImplementedError

    def error_kind(self, err: str) -> str:
        """Groups a report error such as ``u-3/google: Google 403 userRateLimitExceeded while ...``."""
        text = err.split(": ", 1)[-1]
        if text.startswith("client-side quota spent"):
            return "client quota wait > MAX_INLINE_WAIT (Throttled)"
        if self.error_prefix and text.startswith(self.error_prefix):
            return " ".join(text.split(" while ")[0].split()[:3])
        return text[:60]


# ---- set-up ----------------------------------------------------------------------------------


def account_email(j: int) -> str:
    """The address of connected person number ``j`` (user id ``u-{j:03d}``)."""
    return f"bench{j:03d}@example.com"


def session_start(i: int, version: int) -> datetime:
    """When session ``i`` starts at ``version``: version 2 is the same session one hour later."""
    return FIRST_START + timedelta(hours=2 * i + (version - 1))


def session_payload(i: int, version: int, people: Sequence[tuple[str, str]]) -> dict[str, Any]:
    start = session_start(i, version)
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


def writes(log: Sequence[Any]) -> list[Any]:
    return [r for r in log if r.kind == "api" and r.method in WRITE_METHODS]


def parser(sc: type[Scenario]) -> argparse.ArgumentParser:
    """The options every bulk bench has, with the scenario's own (``add_arguments``) after ``--window``."""
    p = argparse.ArgumentParser(prog=f"python -m {sc.module()}", description=sc.description())
    p.add_argument("--placements", type=int, default=sc.default_placements,
                   help=f"N: {sc.label} placements changed in phase 2 (default {sc.default_placements})")
    p.add_argument("--accounts", type=int, default=sc.default_accounts,
                   help=f"A: connected {sc.label} {sc.accounts_word}; every session has all A "
                        f"(default {sc.default_accounts})")
    p.add_argument("--workers", type=int, default=8, help="T: worker threads (default 8, Dramatiq's default)")
    p.add_argument("--window", type=float, default=sc.default_window, help=sc.window_help)
    for flag, default, text in sc.limit_options:
        p.add_argument(flag, type=int, default=default, help=text)
    sc.add_arguments(p)
    p.add_argument("--quota", choices=("redis", "memory"), default="redis",
                   help="client-side quota backend (default redis)")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/14",
                   help="Redis for --quota redis; FLUSHED at start and end")
    p.add_argument("--db", default=None, help="database URL (default: a SQLite file in a temp dir)")
    p.add_argument("--retry-min-ms", type=int, default=None,
                   help="override retry_min_backoff_ms (default: the production setting)")
    return p


def environment() -> str:
    try:
        cores = f"{len(os.sched_getaffinity(0))} usable of {os.cpu_count()}"
    except AttributeError:  # not Linux
        cores = str(os.cpu_count())
    return (f"environment: {cores} cores, {platform.python_implementation()} {platform.python_version()}, "
            f"{platform.system()} {platform.release()} {platform.machine()}")


# ---- the run ---------------------------------------------------------------------------------


def run(kind: type[Scenario], argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Parse ``argv`` (default: the command line), run both phases of the scenario, print; 0 or 1."""
    argv = list(sys.argv[1:] if argv is None else argv)
    out = out or sys.stdout
    p = parser(kind)
    args = p.parse_args(argv)
    sc = kind(args)
    counts = ["--placements", "--accounts", "--workers"] + [flag for flag, _, _ in kind.limit_options]
    if any(getattr(args, flag[2:].replace("-", "_")) < 1 for flag in counts):
        p.error(f"{', '.join(counts[:-1])} and {counts[-1]} must be >= 1")
    if (why := sc.invalid()) is not None:
        p.error(why)
    sessions_n = math.ceil(args.placements / args.accounts)
    n = sessions_n * args.accounts

    def say(line: str = "") -> None:
        print(line, file=out, flush=True)

    from sync import accounts, api
    from sync.config import Settings
    from sync.engine.runtime import Runtime
    from sync.quota import MAX_INLINE_WAIT, MemoryQuota, RedisQuota
    from sync.store.crypto import CredentialBox, new_key
    from sync.store.db import Store, engine_for
    from sync.store.migrate import upgrade

    say(f"command: PYTHONPATH=. {os.path.basename(sys.executable)} -m {sc.module()} {shlex.join(argv)}".rstrip())
    say(environment())
    say(f"scaling: {sc.scaling()}, same sliding-window semantics on both sides")
    if n != args.placements:
        say(f"note: {args.placements} placements rounded up to {n} = {sessions_n} sessions x {args.accounts} "
            f"{sc.accounts_word}")

    tmp = tempfile.TemporaryDirectory(prefix="calsync-bench-")
    db_url = args.db or f"sqlite:///{tmp.name}/bench.db"
    redis_client = None
    worker: InProcessWorker | None = None
    emu = sc.start_emulator()
    try:
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
        settings = Settings(database_url=db_url, broker_url="memory://", mail_from="sessions@calsync.example",
                            smtp_url="file:///nonexistent", secret_keys=new_key(), **sc.settings(emu), **overrides)
        email = NoEmail()
        box = CredentialBox([k.get_secret_value() for k in settings.secret_keys])
        rt = Runtime(settings, Store(db_url), channels=lambda s, st: {
            "email": email, sc.channel_name: sc.channel(s, st, box, metered)})
        say(f"setup: db {db_url.split('?')[0]}, quota backend {args.quota}, {args.workers} worker threads, "
            f"MAX_INLINE_WAIT {MAX_INLINE_WAIT:g} s, retry_min_backoff_ms {settings.retry_min_backoff_ms}, "
            + sc.setup_detail(emu))

        people = [(f"u-{j:03d}", account_email(j)) for j in range(args.accounts)]
        imported = accounts.import_integrations(rt, [
            {"user_id": uid, "provider": sc.channel_name, "account_email": mail,
             "calendar_id": sc.calendar_id,
             "refresh_token": emu.add_user(mail)} for uid, mail in people], enqueue=lambda sid: None)
        bad = [r for r in imported if not r.ok]
        if bad:
            raise RuntimeError(f"integration import failed: {bad}")
        ids = [f"bench-{i:06d}" for i in range(sessions_n)]
        for i in range(sessions_n):
            result = api.upsert_session(session_payload(i, 1, people), rt=rt, enqueue=False)
            if not result.ok:
                raise RuntimeError(f"booking session {i} failed: {result}")

        worker = InProcessWorker(rt, args.workers, sc.error_kind)
        limits, formula = sc.bound(n, sessions_n)
        bound = max(limits.values())
        say(f"N = {n} placements ({sessions_n} sessions x {args.accounts} {sc.label} {sc.accounts_word})")
        say(f"quota-bound minimum for N writes: {bound:.2f} s = max("
            + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in limits.items()) + f"); {formula}")

        failed = False
        for phase, version in (("phase 1 (create)", 1), ("phase 2 (bulk reschedule, measured)", 2)):
            if version == 2:
                # Empty both quota windows, so phase 2 starts as a bulk change after a quiet spell would.
                time.sleep(args.window + 0.5)
                for i in range(sessions_n):
                    result = api.upsert_session(session_payload(i, 2, people), rt=rt, enqueue=False)
                    if not result.ok:
                        raise RuntimeError(f"rescheduling session {i} failed: {result}")
            sc.before_phase(emu)
            metered.reset()
            res = worker.run_all(ids)
            log = emu.request_log
            failed |= _report_phase(say, sc, phase, version, res, log, emu, metered, n, bound, sessions_n)
            # Each calendar must hold exactly one live event per session, as this phase left it.
            for _, mail in people:
                states = sc.event_states(emu, mail)
                versions = Counter(v for _, v in states)
                sessions_seen = len({sid for sid, _ in states})
                if len(states) != sessions_n or sessions_seen != sessions_n or versions != {str(version): sessions_n}:
                    say(f"  ERROR: {mail} holds {len(states)} events for {sessions_seen} sessions, versions "
                        f"{dict(versions)}; expected {sessions_n} at version {version}")
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
        engine_for(db_url).dispose()
        tmp.cleanup()


def entry_point(kind: type[Scenario]) -> Callable[..., int]:
    """The bench module's ``main(argv=None, out=None)``: exit status 0, or 1 if the bench went wrong."""
    def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
        return run(kind, argv, out)

    main.__doc__ = f"Runs {kind.module()} with ``argv`` (default: the command line), printing to ``out``."
    return main


def _report_phase(say: Callable[..., None], sc: Scenario, phase: str, version: int, res: PhaseResult,
                  log: Sequence[Any], emu: Any, metered: MeteredQuota, n: int, bound: float,
                  sessions_n: int) -> bool:
    """Prints one phase's figures; True if the bench itself went wrong (a crash)."""
    measured = version == 2
    w = writes(log)
    ok_writes = sum(1 for r in w if r.status is not None and r.status < 300)
    refused = [r for r in log if r.kind == "api" and r.status in sc.limited_statuses]
    span = (w[-1].time - w[0].time) if w else 0.0
    say()
    say(f"== {phase}")
    say(f"  wall time, first reconcile submitted -> last done: {res.wall:.2f} s")
    say(f"  span, first -> last write the emulator received:    {span:.2f} s")
    say(f"  measured / quota bound: {fmt_ratio(res.wall, bound)} (wall), {fmt_ratio(span, bound)} (span)"
        + ("   [target <= 1.15]" if measured else ""))
    # The bound counts each window's burst as instant; the client needs real time to send it,
    # and with sliding windows every later window replays the first one's pace.
    first_window = sc.first_window(n)
    ok_times = [r.time for r in w if r.status is not None and r.status < 300]
    if bound > 0 and len(ok_times) >= first_window:
        burst = ok_times[first_window - 1] - ok_times[0]
        pace = first_window / burst if burst else float("inf")
        say(f"  first-window burst: {first_window} writes took {burst:.2f} s at this machine's pace "
            f"(~{pace:.0f}/s); bound + burst = {bound + burst:.2f} s, "
            f"measured / (bound + burst) = {res.wall / (bound + burst):.3f}")
    say(f"  calls per changed placement: {len(w) / n:.3f} ({len(w)} writes, {ok_writes} 2xx, "
        f"methods {dict(Counter(r.method for r in w))})" + ("   [target 1.0]" if measured else ""))
    statuses = "/".join(str(s) for s in sorted(sc.limited_statuses))
    say(f"  {statuses} answers received: {len(refused)}" + ("   [target 0]" if measured else "")
        + (f" ({sc.limited_detail(refused)})" if refused else ""))
    for line in sc.phase_lines(emu, log, n, res.wall):
        say("  " + line)
    delays = res.retry_delay_ms
    say(f"  reconciles run: {res.runs} for {sessions_n} sessions; re-queued with retry_in_ms: {res.retries}"
        + (f" (delay ms min {min(delays)}, max {max(delays)})" if delays else ""))
    say(f"  client limiter: {metered.takes} takes, {metered.refusals} told to wait "
        f"(announced waits total {metered.waited:.1f} s)")
    if res.errors:
        say("  placement errors seen in reports: " + ", ".join(f"{k} x{v}" for k, v in res.errors.most_common()))
    if res.crashes:
        say(f"  CRASHES: {len(res.crashes)}, first: {res.crashes[0]}")
        return True
    return False
