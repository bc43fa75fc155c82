"""The chaos rig: real ``calsync worker`` processes on PostgreSQL and Redis while a platform churns and things break.

calsync promises that sessions converge on people's calendars whatever happens in between:
workers die, providers fail, the broker loses its queue, the database drops connections,
tokens die. Unit and in-process tests each cover one of these; only real worker processes,
a real broker and a real database show how they combine. This module provides the pieces;
``test_chaos.py`` tells the story with them.

- :class:`Scale` — how big a run is: CI size by default, ``CALSYNC_RELIABILITY_SCALE=N``
  multiplies sessions, people, churn and kills for README figures.
- :class:`Platform` — the mentoring platform's own model (people, their addresses and
  connections, sessions and their versions) and the random churn it pushes: reschedule,
  retitle, add/remove a participant, change a person's address, cancel, un-cancel,
  connect, disconnect.
- :class:`Rig` — a private PostgreSQL schema, Redis db 15 (flushed at start and end), the
  SMTP server, the Google and Graph emulators, the ``calsync`` CLI as the platform and
  support staff call it, and :class:`Workers`: ``calsync worker`` process groups that can
  be SIGKILLed and restarted.
- :class:`FaultStorm` — 5xx, 429 with and without Retry-After, lost responses and late
  answers queued on both emulators while it runs.
- reading back: the store's truth (through ``sync.api``), and what landed (events by
  calsync's tag in each emulator, invites from the SMTP server) for
  :func:`calendar_view.check`.

Why PostgreSQL backends are terminated instead of restarting the server: the cluster on this
machine is shared with other test runs (other engineers run the suite concurrently), so a
``pg_ctlcluster … restart`` would break their runs. Every connection calsync opens in this
run carries ``application_name=<run tag>`` (in the database URL), so :meth:`Rig.postgres_outage`
can terminate exactly this run's backends — repeatedly, for a few seconds — which is what a
restart looks like to calsync (in-flight transactions fail, pooled connections are dead).
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TextIO

from tests.reliability.calendar_view import (
    EventCopy,
    Invite,
    Route,
    Seen,
    SessionTruth,
    Truth,
    google_copy,
    outlook_copy,
    parse_invites,
)

ROOT = Path(__file__).resolve().parents[2]
MAIL_FROM = "sessions@calsync.example"
PROVIDERS = ("google", "outlook")
QUEUE = "calsync"  # sync.engine.broker.QUEUE; dramatiq's Redis keys are dramatiq:<queue>[.DQ|.XQ][.msgs]
TIMEZONES = ("Europe/Berlin", "America/New_York", "Asia/Tokyo", "UTC", "America/Sao_Paulo")
TOPICS = ("Setting goals", "Career paths", "Code review", "Public speaking", "Negotiation", "Wrap-up")

#: Short settings so a run converges in seconds: fast retries, leases that a SIGKILLed
#: worker's placements outlive by only a few seconds, a sweep every second.
FAST_SETTINGS = {
    "CALSYNC_RETRY_MIN_BACKOFF_MS": "50",
    "CALSYNC_RETRY_MAX_BACKOFF_MS": "500",
    "CALSYNC_LEASE_SECONDS": "5",
    "CALSYNC_SWEEP_INTERVAL_SECONDS": "1",
    "CALSYNC_IO_TIMEOUT_SECONDS": "3",
    # The storm faults about a quarter of all calls; with the default 6 attempts a placement
    # occasionally uses them all and is then retried an hour later (the production policy),
    # which "zero missing after one sweep" cannot wait for. 12 makes that practically never.
    "CALSYNC_MAX_ATTEMPTS": "12",
}
LEASE_SECONDS = int(FAST_SETTINGS["CALSYNC_LEASE_SECONDS"])
#: Placement states (sync.core.states.State) with an attempt under way or still to come.
IN_FLIGHT = ("pending", "sending", "retrying")
IO_TIMEOUT = float(FAST_SETTINGS["CALSYNC_IO_TIMEOUT_SECONDS"])


# ---- scale -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scale:
    """How big a run is. ``factor`` 1 is the CI run; larger factors are for README figures."""

    factor: int
    sessions: int
    people: int
    ops: int
    kills: int
    flushes: int
    outages: int
    workers: int = 2
    threads: int = 4
    ops_per_round: int = 5
    outage_seconds: float = 2.0
    drain_timeout: float = 90.0

    @classmethod
    def from_env(cls) -> Scale:
        f = max(1, int(os.environ.get("CALSYNC_RELIABILITY_SCALE", "1")))
        return cls(factor=f, sessions=40 * f, people=25 * f, ops=60 * f, kills=4 * f,
                   flushes=1 + (f - 1) // 3, outages=1 + (f - 1) // 3, drain_timeout=90.0 + 30 * f)

    @property
    def rounds(self) -> int:
        return math.ceil(self.ops / self.ops_per_round)


# ---- the platform's model and its churn --------------------------------------------------------


@dataclass
class Person:
    user_id: str
    name: str
    addresses: list[str]  # every address they ever had; the last is current
    #: Provider the platform connected and has not disconnected.
    connected: str | None = None
    #: Providers whose grant the test killed and that were not reconnected since (copies there are stranded).
    revoked: set[str] = field(default_factory=set)

    @property
    def address(self) -> str:
        return self.addresses[-1]

    def account(self, provider: str) -> str:
        """The person's own account at a provider (fixed: one Google and one Microsoft account each)."""
        return f"{self.user_id}@{'gmail' if provider == 'google' else 'outlook'}.example"


@dataclass
class Booking:
    """One session as the platform holds it; every change raises ``version``."""

    session_id: str
    version: int
    topic: str
    edits: int
    start: datetime
    minutes: int
    timezone: str
    status: str
    participants: list[str]
    #: Everyone who was ever a participant (a withdrawn copy is judged for them too).
    ever: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.ever.update(self.participants)

    @property
    def title(self) -> str:
        base = f"{self.session_id}: {self.topic}"
        return base if not self.edits else f"{base} (edit {self.edits})"

    def payload(self, people: dict[str, Person]) -> dict[str, Any]:
        return {
            "id": self.session_id, "version": self.version, "title": self.title, "program": "Reliability",
            "start": self.start.isoformat(), "end": (self.start + timedelta(minutes=self.minutes)).isoformat(),
            "timezone": self.timezone, "status": self.status,
            "meeting_url": f"https://video.example/{self.session_id}",
            "agenda_html": f"<p>Agenda for {self.session_id}</p>",
            "view_url": f"https://platform.example/sessions/{self.session_id}",
            "participants": [{"user_id": u, "email": people[u].address, "name": people[u].name,
                              "role": "mentor" if i == 0 else "mentee"}
                             for i, u in enumerate(self.participants)],
        }


@dataclass
class RoundPlan:
    """What one churn round asks calsync to do."""

    changed: dict[str, dict[str, Any]] = field(default_factory=dict)  # session id → latest payload
    connects: list[tuple[Person, str]] = field(default_factory=list)
    disconnects: list[Person] = field(default_factory=list)


class Platform:
    """The mentoring platform: it owns people and sessions, and churns them the way real users do."""

    #: Relative weights of the churn operations; every kind also appears at least once per run.
    WEIGHTS = {"reschedule": 4, "retitle": 3, "add participant": 2, "remove participant": 2,
               "change address": 1, "cancel": 1, "uncancel": 1, "connect": 1, "switch provider": 1,
               "disconnect": 1}

    def __init__(self, rng: random.Random, scale: Scale) -> None:
        self.rng = rng
        self.people: dict[str, Person] = {}
        for i in range(scale.people):
            uid = f"rel-u{i:03d}"
            self.people[uid] = Person(uid, f"Person {i}", [f"{uid}.a1@people.example"])
        ids = list(self.people)
        first = (datetime.now(timezone.utc) + timedelta(days=2)).replace(minute=0, second=0, microsecond=0)
        self.bookings: dict[str, Booking] = {}
        for i in range(scale.sessions):
            sid = f"rel-s{i:03d}"
            who = rng.sample(ids, rng.randint(2, 4))
            self.bookings[sid] = Booking(sid, 1, rng.choice(TOPICS), 0, first + timedelta(hours=3 * i),
                                         rng.choice((30, 45, 60)), rng.choice(TIMEZONES), "scheduled", who)
        self.ops: Counter[str] = Counter()
        # The run's operations, drawn up front: one of each kind, the rest by weight, shuffled.
        kinds = list(self.WEIGHTS)
        deck = kinds + rng.choices(kinds, weights=list(self.WEIGHTS.values()), k=max(0, scale.ops - len(kinds)))
        rng.shuffle(deck)
        self.deck = deck

    # -- set-up --

    def initial_connections(self, share: float = 0.4) -> list[tuple[Person, str]]:
        """About ``share`` of the people start connected, alternating Google and Outlook."""
        chosen = self.rng.sample(list(self.people.values()), round(len(self.people) * share))
        return [(p, PROVIDERS[i % 2]) for i, p in enumerate(chosen)]

    def payloads(self) -> list[dict[str, Any]]:
        return [b.payload(self.people) for b in self.bookings.values()]

    # -- churn --

    def churn(self, n: int, plan: RoundPlan | None = None) -> RoundPlan:
        """The next ``n`` operations of the deck, applied to the model now; what calsync must be told comes back.

        An operation that does not apply yet (an un-cancel with nothing cancelled) goes back
        into the deck for a later round; at the very end a reschedule stands in for it.
        """
        plan = plan or RoundPlan()
        for _ in range(n):
            if not self.deck:
                break
            op = self.deck.pop(0)
            if self._apply(op, plan):
                self.ops[op] += 1
            elif self.deck:
                self.deck.insert(self.rng.randrange(len(self.deck) + 1), op)
                self._apply("reschedule", plan)
                self.ops["reschedule"] += 1
        return plan

    def retitle_sessions_of(self, person: Person, plan: RoundPlan, *, every: bool) -> list[str]:
        """New intent for ``person``: a retitle of one of their scheduled sessions, or of every session
        they were ever in (``every``). Returns the session ids."""
        if every:
            chosen = [b for b in self.bookings.values() if person.user_id in b.ever]
        else:
            theirs = [b for b in self.bookings.values()
                      if person.user_id in b.participants and b.status == "scheduled"]
            chosen = [self.rng.choice(theirs)] if theirs else []
        for b in chosen:
            b.edits += 1
            self._touch(b, plan)
            self.ops["retitle"] += 1
        return [b.session_id for b in chosen]

    def _touch(self, b: Booking, plan: RoundPlan) -> None:
        b.version += 1
        plan.changed[b.session_id] = b.payload(self.people)

    def _apply(self, op: str, plan: RoundPlan) -> bool:
        rng = self.rng
        scheduled = [b for b in self.bookings.values() if b.status == "scheduled"]
        cancelled = [b for b in self.bookings.values() if b.status == "cancelled"]
        if op == "reschedule" and scheduled:
            b = rng.choice(scheduled)
            b.start = max(b.start + timedelta(hours=rng.choice((-5, -2, -1, 1, 2, 3, 24, 49))),
                          datetime.now(timezone.utc) + timedelta(days=1))
        elif op == "retitle":
            b = rng.choice(list(self.bookings.values()))
            b.edits += 1
        elif op == "add participant":
            b = rng.choice(list(self.bookings.values()))
            others = [u for u in self.people if u not in b.participants]
            former = [u for u in b.ever if u not in b.participants]
            if len(b.participants) >= 5 or not others:
                return False
            # Half the time someone who was removed comes back: their copy must be placed again.
            b.participants.append(rng.choice(former if former and rng.random() < 0.5 else others))
            b.ever.update(b.participants)
        elif op == "remove participant":
            candidates = [b for b in self.bookings.values() if len(b.participants) > 2]
            if not candidates:
                return False
            b = rng.choice(candidates)
            b.participants.remove(rng.choice(b.participants[1:]))
        elif op == "change address":
            p = rng.choice(list(self.people.values()))
            p.addresses.append(f"{p.user_id}.a{len(p.addresses) + 1}@people.example")
            # The platform's user record changed: every session of theirs goes out with the new address.
            for b in self.bookings.values():
                if p.user_id in b.participants:
                    self._touch(b, plan)
            return True
        elif op == "cancel" and scheduled:
            b = rng.choice(scheduled)
            b.status = "cancelled"
        elif op == "uncancel" and cancelled:
            b = rng.choice(cancelled)
            b.status = "scheduled"
            if rng.random() < 0.5:
                b.start += timedelta(days=1)
        elif op == "connect":
            taken = {p.user_id for p, _ in plan.connects}
            free = [p for p in self.people.values() if p.connected is None and p.user_id not in taken]
            if not free:
                return False
            plan.connects.append((rng.choice(free), rng.choice(PROVIDERS)))
            return True
        elif op == "switch provider":
            alive = [p for p in self.people.values() if p.connected and p.connected not in p.revoked
                     and p not in plan.disconnects and p.user_id not in {q.user_id for q, _ in plan.connects}]
            if not alive:
                return False
            p = rng.choice(alive)
            # Connecting the other provider retires this one: its events must be withdrawn.
            plan.connects.append((p, "outlook" if p.connected == "google" else "google"))
            return True
        elif op == "disconnect":
            linked = [p for p in self.people.values() if p.connected is not None and p not in plan.disconnects
                      and p.user_id not in {q.user_id for q, _ in plan.connects}]
            if not linked:
                return False
            plan.disconnects.append(rng.choice(linked))
            return True
        else:
            return False
        self._touch(b, plan)
        return True

    def dead_accounts(self) -> frozenset[tuple[str, str]]:
        return frozenset((prov, p.account(prov)) for p in self.people.values() for prov in p.revoked)


# ---- worker processes --------------------------------------------------------------------------


class Workers:
    """``calsync worker --processes 1`` groups: SIGKILL one whole group (supervisor and worker), restart it."""

    def __init__(self, env: dict[str, str], cwd: Path, count: int, threads: int) -> None:
        self.env, self.cwd, self.threads = env, cwd, threads
        self.slots: list[subprocess.Popen[bytes] | None] = [None] * count
        self.logs: list[Path] = []
        self.kills = self.restarts = 0
        self.unexpected_exits: list[str] = []

    def _start(self, i: int) -> None:
        log = self.cwd / f"worker-{i}-{len(self.logs)}.log"
        self.logs.append(log)
        with open(log, "wb") as out:
            self.slots[i] = subprocess.Popen(
                [sys.executable, "-m", "sync.cli", "worker", "--processes", "1", "--threads", str(self.threads)],
                env=self.env, cwd=self.cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def start_all(self) -> None:
        for i in range(len(self.slots)):
            self._start(i)

    def ensure_running(self) -> None:
        """Restart killed groups; a group that exited on its own is recorded (it should never)."""
        for i, proc in enumerate(self.slots):
            if proc is not None and proc.poll() is not None:
                self.unexpected_exits.append(f"worker {i} (pid {proc.pid}) exited with {proc.returncode}")
                proc = None
            if proc is None:
                self._start(i)
                self.restarts += 1

    def kill_random(self, rng: random.Random) -> None:
        alive = [i for i, p in enumerate(self.slots) if p is not None and p.poll() is None]
        if not alive:
            return
        i = rng.choice(alive)
        proc = self.slots[i]
        assert proc is not None
        os.killpg(proc.pid, signal.SIGKILL)  # the supervisor and its worker process, mid-whatever
        proc.wait(10)
        self.slots[i] = None
        self.kills += 1

    def stop(self) -> None:
        for proc in self.slots:
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.slots:
            if proc is None:
                continue
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)

    def tracebacks(self) -> tuple[int, Counter[str]]:
        """How many tracebacks the worker logs hold, and their most common final lines."""
        count, last_lines = 0, Counter[str]()
        pattern = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Lost|Timeout)\b.*")
        for log in self.logs:
            if not log.exists():
                continue
            text = log.read_text(errors="replace")
            count += text.count("Traceback (most recent call last)")
            last_lines.update(m.group(0)[:160] for m in map(pattern.match, text.splitlines()) if m)
        return count, last_lines


# ---- provider fault storm ----------------------------------------------------------------------


class FaultStorm:
    """About ``rate`` of each emulator's requests meet a fault while it runs, whatever the traffic.

    Every ``period`` it counts the requests each emulator received since the last look and
    queues a fault for each with probability ``rate`` (at most ``cap`` waiting): the next API
    requests take them. Proportional, not "always one queued", so a lone placement retrying in
    a quiet moment meets the storm's rate and not a fault on every attempt (which would only
    prove that six attempts can be spent).

    Kinds: a 5xx, a 429 with Retry-After: 1, a 429 without it, a lost response (applied, then
    the connection reset) and a late answer (applied, answered after the client's timeout).
    """

    KINDS = {"5xx": 4, "429 with Retry-After": 2, "429 without Retry-After": 2, "lost response": 3,
             "late answer": 1}

    def __init__(self, emulators: dict[str, Any], seed: int, rate: float = 0.25, period: float = 0.2,
                 cap: int = 3) -> None:
        self.emulators, self.rate, self.period, self.cap = emulators, rate, period, cap
        self.rng = random.Random(seed)
        self.queued: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _inject(self, emu: Any, kind: str) -> None:
        if kind == "5xx":
            emu.fail_next(1, status=self.rng.choice((500, 502, 503)))
        elif kind == "429 with Retry-After":
            emu.fail_next(1, status=429, retry_after=1)
        elif kind == "429 without Retry-After":
            emu.fail_next(1, status=429)
        elif kind == "lost response":
            emu.lose_next_response(1)
        else:
            emu.timeout_next(1, seconds=IO_TIMEOUT + 0.5, applied=True)

    def _loop(self) -> None:
        seen = {name: len(emu.request_log) for name, emu in self.emulators.items()}
        while not self._stop.wait(self.period):
            for name, emu in self.emulators.items():
                total = len(emu.request_log)
                new, seen[name] = total - seen[name], total
                for _ in range(sum(self.rng.random() < self.rate for _ in range(new))):
                    if emu.pending_faults >= self.cap:
                        break
                    kind = self.rng.choices(list(self.KINDS), weights=list(self.KINDS.values()))[0]
                    self._inject(emu, kind)
                    self.queued[f"{name} {kind}"] += 1

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="fault-storm", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        for emu in self.emulators.values():
            emu.clear_faults()

    @staticmethod
    def hits(emulators: dict[str, Any]) -> Counter[str]:
        """Faults requests actually met, from each emulator's log: "google fail 503", "outlook lose", …"""
        out: Counter[str] = Counter()
        for name, emu in emulators.items():
            for r in emu.request_log:
                if r.fault:
                    out[f"{name} {r.fault}" + (f" {r.status}" if r.fault == "fail" else "")] += 1
        return out


# ---- the rig -----------------------------------------------------------------------------------


class CliFailed(AssertionError):
    """A calsync command kept failing after its retries; a bug or a broken rig, never chaos."""


@dataclass
class Drain:
    seconds: float
    settled: bool
    unsettled: list[str]
    backlog: int


class Rig:
    """Every server one run needs, started fresh and torn down after; the CLI; the workers."""

    def __init__(self, tmp: Path, scale: Scale, say: Callable[[str], None]) -> None:
        self.tmp, self.scale, self.say = tmp, scale, say
        self.tag = f"calsync-rel-{uuid.uuid4().hex[:10]}"
        self.cli_calls: Counter[str] = Counter()
        #: Non-zero exits of CLI calls (retried; shown in the report, since chaos explains only some).
        self.cli_failures: list[str] = []
        #: Those that ended in a traceback: a bug whatever the chaos (failed the run as anomalies).
        self.cli_crashes: list[str] = []
        self.flushes = 0
        self.terminated_backends = 0
        self._cleanups: list[Callable[[], None]] = []

    # -- lifecycle --

    def __enter__(self) -> Rig:
        try:
            self._start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _start(self) -> None:
        import redis
        from sqlalchemy import create_engine, text

        from sync.store.crypto import new_key
        from sync.testing.emulators.google import GoogleEmulator
        from sync.testing.emulators.graph import GraphEmulator
        from sync.testing.settings import google_settings, outlook_settings
        from tests.support.services import POSTGRES_URL, REDIS_URL, require_service
        from tests.support.smtpserver import SmtpServer

        self.admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT",
                                   connect_args={"application_name": f"{self.tag}-admin"})
        self._cleanups.append(self.admin.dispose)
        require_service("PostgreSQL", lambda: self.admin.connect().close())
        self.redis = redis.Redis.from_url(REDIS_URL)
        require_service("Redis", self.redis.ping)
        self.redis.flushdb()
        self._cleanups.append(self.redis.flushdb)

        self.schema = f"rel_{uuid.uuid4().hex[:12]}"
        with self.admin.connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{self.schema}"'))
        self._cleanups.append(self._drop_schema)
        sep = "&" if "?" in POSTGRES_URL else "?"
        self.db_url = f"{POSTGRES_URL}{sep}options=-csearch_path%3D{self.schema}&application_name={self.tag}"
        self.reader_url = f"{POSTGRES_URL}{sep}options=-csearch_path%3D{self.schema}&application_name={self.tag}-r"

        self.smtp = SmtpServer().__enter__()
        self._cleanups.append(lambda: self.smtp.__exit__(None, None, None))
        self.google = GoogleEmulator()
        self._cleanups.append(self.google.stop)
        self.graph = GraphEmulator()
        self._cleanups.append(self.graph.stop)
        self.emulators = {"google": self.google, "outlook": self.graph}

        base = {k: v for k, v in os.environ.items() if not k.startswith("CALSYNC_")}
        self.env = {
            **base,
            "PYTHONPATH": str(ROOT),
            "CALSYNC_DATABASE_URL": self.db_url,
            "CALSYNC_BROKER_URL": REDIS_URL,
            "CALSYNC_SMTP_URL": self.smtp.url,
            "CALSYNC_MAIL_FROM": MAIL_FROM,
            "CALSYNC_SECRET_KEYS": new_key(),
            **google_settings(self.google, "calsync-reliability", "reliability-secret"),
            **outlook_settings(self.graph, "calsync-reliability", "reliability-secret"),
            **FAST_SETTINGS,
        }
        self.workers = Workers(self.env, self.tmp, self.scale.workers, self.scale.threads)
        self._cleanups.append(self.workers.stop)

    def _drop_schema(self) -> None:
        from sqlalchemy import text

        from sync.store.db import engine_for

        engine_for(self.reader_url).dispose()
        with self.admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{self.schema}" CASCADE'))

    def __exit__(self, *exc: object) -> None:
        errors = []
        for cleanup in reversed(self._cleanups):
            try:
                cleanup()
            except Exception as e:  # noqa: BLE001 - tear down the rest, then report
                errors.append(f"{getattr(cleanup, '__qualname__', cleanup)}: {e}")
        self._cleanups.clear()
        if errors:
            self.say("teardown problems: " + "; ".join(errors))

    # -- the CLI, as the platform and support staff call it --

    def calsync(self, *args: str, stdin: str | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        command = " ".join(args[:2])
        self.cli_calls[command] += 1
        r = subprocess.run([sys.executable, "-m", "sync.cli", *args], env=self.env, cwd=self.tmp,
                           input=stdin.encode() if stdin is not None else None, capture_output=True, timeout=timeout)
        out = subprocess.CompletedProcess(r.args, r.returncode, r.stdout.decode(errors="replace"),
                                          r.stderr.decode(errors="replace"))
        if out.returncode != 0:
            tail = (out.stderr.strip().splitlines() or ["(no stderr)"])[-1]
            self.cli_failures.append(f"{command} exit {out.returncode}: {tail[:200]}")
            if "Traceback (most recent call last)" in out.stderr:  # the CLI promises one line, never a traceback
                self.cli_crashes.append(f"calsync {' '.join(args)} crashed: {tail[:200]}")
        return out

    def calsync_ok(self, *args: str) -> str:
        r = self.calsync(*args)
        if r.returncode != 0:
            raise CliFailed(f"calsync {' '.join(args)} exited {r.returncode}: {r.stderr.strip()[-800:]}")
        return r.stdout

    @staticmethod
    def _json(text: str) -> Any:
        try:
            return json.loads(text)
        except ValueError:
            return None

    def push(self, payloads: Sequence[dict[str, Any]], attempts: int = 12) -> None:
        """``calsync sessions upsert -``: retried (only the elements that did not store) while the database is down."""
        pending = list(payloads)
        last = ""
        for _ in range(attempts):
            if not pending:
                return
            r = self.calsync("sessions", "upsert", "-", "--json", stdin=json.dumps(pending))
            results = self._json(r.stdout)
            if not isinstance(results, list) or len(results) != len(pending):
                last = r.stderr.strip()[-400:]
                time.sleep(0.5)
                continue
            bad = [(p, res) for p, res in zip(pending, results, strict=True)
                   if res.get("outcome") not in ("created", "updated", "unchanged")]
            wrong = [res for _, res in bad if res.get("outcome") != "error"]
            if wrong:
                raise CliFailed(f"intake refused the platform's own changes: {wrong}")
            pending = [p for p, _ in bad]
            last = "; ".join(str(res.get("errors")) for _, res in bad)[:400]
            if pending:
                time.sleep(0.5)
        if pending:
            raise CliFailed(f"{len(pending)} sessions could not be stored after {attempts} attempts: {last}")

    def connect(self, who: Sequence[tuple[Person, str]], attempts: int = 8) -> None:
        """Fresh refresh tokens from the emulators, handed over with ``calsync integrations import -``."""
        if not who:
            return
        items = []
        for person, provider in who:
            account = person.account(provider)
            token = self.emulators[provider].add_user(account)  # a new, healthy grant
            items.append({"user_id": person.user_id, "provider": provider, "account_email": account,
                          "refresh_token": token})
        last = ""
        for _ in range(attempts):
            r = self.calsync("integrations", "import", "-", "--json", stdin=json.dumps(items))
            results = self._json(r.stdout)
            if isinstance(results, list) and all(res.get("ok") for res in results):
                for person, provider in who:
                    person.connected = provider
                    person.revoked.discard(provider)
                return
            last = (r.stdout + r.stderr).strip()[-400:]
            if isinstance(results, list):
                items = [it for it, res in zip(items, results, strict=True) if not res.get("ok")]
            time.sleep(0.5)
        raise CliFailed(f"integrations import kept failing: {last}")

    def disconnect(self, person: Person, attempts: int = 8) -> None:
        """``calsync integrations disconnect USER`` as support runs it."""
        last = ""
        for attempt in range(attempts):
            r = self.calsync("integrations", "disconnect", person.user_id, "--json")
            if r.returncode == 0 or (r.returncode == 2 and attempt > 0 and "no connected calendar" in r.stderr):
                # (An attempt that failed after storing the disconnect leaves nothing to disconnect.)
                person.connected = None
                return
            if r.returncode == 2:
                raise CliFailed(f"disconnect {person.user_id}: {r.stderr.strip()}")
            last = r.stderr.strip()[-400:]
            time.sleep(0.5)
        raise CliFailed(f"disconnect {person.user_id} kept failing: {last}")

    # -- infrastructure faults --

    def revoke(self, person: Person) -> None:
        """The person removes calsync's access in their account: every grant of theirs dies."""
        provider = person.connected
        assert provider is not None
        if provider == "google":
            self.google.revoke_user(person.account(provider))
        else:
            self.graph.revoke(person.account(provider))
        person.revoked.add(provider)

    def refuse_mail(self, address: str) -> None:
        """The recipient's mail server answers RCPT with a transient 451 until :meth:`accept_mail`."""
        self.smtp.mailbox.refuse[address] = "451 4.7.1 Greylisted, try again later"

    def accept_mail(self) -> None:
        self.smtp.mailbox.refuse.clear()

    def flush_broker(self) -> None:
        """FLUSHDB on the broker's Redis db: every queued, delayed and unacked message is gone."""
        self.redis.flushdb()
        self.flushes += 1

    def postgres_outage(self, seconds: float) -> None:
        """For ``seconds``, terminate every backend of this run (see the module docstring for why not a restart)."""
        from sqlalchemy import text

        deadline = time.monotonic() + seconds
        with self.admin.connect() as conn:
            while time.monotonic() < deadline:
                n = conn.execute(text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE application_name = :app AND pid <> pg_backend_pid()"), {"app": self.tag}).scalar()
                self.terminated_backends += int(n or 0)
                time.sleep(0.1)

    # -- waiting --

    def backlog(self) -> int:
        """Messages waiting in the broker (the queue and its delay queue; not those a worker holds)."""
        try:
            return int(self.redis.llen(f"dramatiq:{QUEUE}")) + int(self.redis.llen(f"dramatiq:{QUEUE}.DQ"))
        except Exception:  # noqa: BLE001 - a Redis blip is not the end of the wait
            return -1

    def dead_letters(self) -> int:
        return int(self.redis.hlen(f"dramatiq:{QUEUE}.XQ.msgs"))

    def activity(self) -> tuple[int, ...]:
        return (len(self.google.request_log), len(self.graph.request_log), len(self.smtp.mailbox.messages))

    def unsettled(self, session_ids: Sequence[str]) -> list[str]:
        """Sessions not settled at their latest revision, and placements with an attempt in flight or due."""
        from sync import api

        rt = self.reader()
        out = []
        for sid in session_ids:
            view = api.get_session(sid, rt=rt)
            if view.synced_revision < view.revision:
                out.append(f"{sid} (revision {view.revision}, settled at {view.synced_revision})")
            out += [f"{sid} × {p.user_id} {p.channel} {p.state}" for p in view.placements if p.state in IN_FLIGHT]
        return out

    def odd_placements(self, session_ids: Sequence[str]) -> list[str]:
        """Placement rows in any state but placed, withdrawn or stranded, with their details."""
        from sync import api

        rt = self.reader()
        out = []
        for sid in session_ids:
            for p in api.get_session(sid, rt=rt).placements:
                if p.state not in ("placed", "withdrawn", "stranded"):
                    out.append(f"{sid} × {p.user_id}: {self.store_placements(sid, p.user_id)}")
        return sorted(set(out))

    def dead_letter_summaries(self) -> list[str]:
        """Each dead-lettered message: actor, arguments and the last line of its traceback."""
        out = []
        for raw in self.redis.hvals(f"dramatiq:{QUEUE}.XQ.msgs"):
            try:
                msg = json.loads(raw)
            except ValueError:
                out.append(f"(unreadable: {raw[:80]!r})")
                continue
            tb = (msg.get("options", {}).get("traceback") or "").strip().splitlines()
            out.append(f"{msg.get('actor_name')}{tuple(msg.get('args', ()))}: {tb[-1][:200] if tb else 'no traceback'}")
        return out

    def drain(self, session_ids: Sequence[str], quiet: float = 3.0) -> Drain:
        """Wait until every session is settled, nothing is queued and nothing has happened for ``quiet`` s.

        Gives up when nothing at all happened for two leases plus a few sweeps (something is
        stuck, and waiting longer shows nothing new) or after the scale's drain timeout.
        """
        start = time.monotonic()
        deadline = start + self.scale.drain_timeout
        stuck_after = 2 * LEASE_SECONDS + 5.0
        last, changed_at = self.activity(), time.monotonic()
        unsettled: list[str] = []
        backlog = 0
        while time.monotonic() < deadline:
            time.sleep(1.0)
            now_activity = self.activity()
            if now_activity != last:
                last, changed_at = now_activity, time.monotonic()
            idle = time.monotonic() - changed_at
            backlog = self.backlog()
            try:
                unsettled = self.unsettled(session_ids)
            except Exception as e:  # noqa: BLE001 - report it, keep waiting
                unsettled = [f"(store unreadable: {type(e).__name__})"]
            if idle >= quiet and backlog == 0 and not unsettled:
                return Drain(time.monotonic() - start, True, [], 0)
            if idle >= stuck_after:
                break
        return Drain(time.monotonic() - start, False, unsettled, backlog)

    # -- reading back --

    def reader(self) -> Any:
        """A runtime on this run's schema for the test's own reads (never terminated by an outage)."""
        from sync.engine.runtime import Runtime
        from sync.store.db import Store
        from tests.support.factories import make_settings

        if not hasattr(self, "_reader"):
            self._reader = Runtime(make_settings(self.reader_url), Store(self.reader_url))
        return self._reader

    def read_truth(self, platform: Platform) -> tuple[Truth, list[str], Counter[str]]:
        """The store's current truth, how it differs from what the platform sent, and placement states."""
        from sync import api
        from sync.accounts import list_integrations
        from sync.core.render import session_uid

        rt = self.reader()
        sessions: dict[str, SessionTruth] = {}
        mismatches: list[str] = []
        states: Counter[str] = Counter()
        for sid, b in platform.bookings.items():
            view = api.get_session(sid, rt=rt)
            s = view.session
            sessions[sid] = SessionTruth(sid, s.status, s.title, s.start,
                                         {p.user_id: p.email.lower() for p in s.participants})
            states.update(f"{p.channel}/{p.state}" for p in view.placements)
            want = (b.version, b.status, b.title, b.start, {u: platform.people[u].address for u in b.participants})
            got = (s.version, s.status, s.title, s.start, dict(sessions[sid].participants))
            if want != got:
                mismatches.append(f"session {sid}: platform sent {want}, store holds {got}")
        routes: dict[str, Route] = {}
        status: dict[str, list[str]] = {}
        for row in list_integrations(rt):
            status.setdefault(row.user_id, []).append(f"{row.provider}:{row.status}")
            if row.status == "active":
                if row.user_id in routes:
                    mismatches.append(f"{row['user_id']} has two active integrations")
                routes[row.user_id] = Route(row.provider, (row.account_email or "").lower())
        for p in platform.people.values():
            held = status.get(p.user_id, [])
            if p.connected is not None and p.connected not in p.revoked and f"{p.connected}:active" not in held:
                mismatches.append(f"{p.user_id}: connected to {p.connected} with a live token, store says {held}")
            if p.connected is None and any(h.endswith(":active") for h in held):
                mismatches.append(f"{p.user_id}: disconnected, store still says {held}")
            if any(h.endswith(":disconnecting") for h in held):  # the sweep finishes these once copies are gone
                mismatches.append(f"{p.user_id}: a disconnect never finished: {held}")
        truth = Truth(
            sessions=sessions, routes=routes,
            addresses={u: frozenset(a.lower() for a in p.addresses) for u, p in platform.people.items()},
            uids={session_uid(sid): sid for sid in platform.bookings},
            dead=platform.dead_accounts(),
            ever=frozenset((sid, u) for sid, b in platform.bookings.items() for u in b.ever),
        )
        return truth, mismatches, states

    def observe(self) -> tuple[Seen, list[str]]:
        """Everything that landed: tagged events in every emulated calendar, every accepted invite."""
        events: list[EventCopy] = []
        odd: list[str] = []
        for account in self.google.users:
            for ev in self.google.events(account):
                copy = google_copy(account, ev)
                if copy is None:
                    odd.append(f"untagged Google event {ev.get('id')} in {account}")
                else:
                    events.append(copy)
        for mailbox in self.graph.users:
            for ev in self.graph.events(mailbox):
                copy = outlook_copy(mailbox, ev)
                if copy is None:
                    odd.append(f"untagged Outlook event {str(ev.get('id'))[:20]} in {mailbox}")
                else:
                    events.append(copy)
        invites: list[Invite] = []
        for arrival, (_, rcpts, raw) in enumerate(list(self.smtp.mailbox.messages)):
            try:
                parsed = parse_invites(raw, rcpts, arrival)
            except Exception as e:  # noqa: BLE001 - an unreadable invite is a finding
                odd.append(f"message #{arrival} to {rcpts}: unreadable invite ({type(e).__name__}: {e})")
                continue
            if not parsed:
                odd.append(f"message #{arrival} to {rcpts}: no text/calendar part")
            invites += parsed
        for name, emu in self.emulators.items():
            odd += [f"{name} emulator internal error: {tb.strip().splitlines()[-1]}" for tb in emu.internal_errors]
        return Seen(events, invites), odd

    def store_placements(self, session_id: str, user_id: str) -> str:
        """The store's placement rows for one (session, person), one short line, for failure reports."""
        from sync import api

        try:
            view = api.get_session(session_id, rt=self.reader())
        except Exception as e:  # noqa: BLE001
            return f"(unreadable: {e})"
        rows = []
        for p in view.placements:
            if p.user_id != user_id:
                continue
            bits = [f"{p.channel}", f"state={p.state}", f"live={p.live}"]
            for name in ("recipient_email", "sequence", "generation", "attempts", "in_doubt", "revision"):
                value = getattr(p, name, None)
                if value not in (None, ""):
                    bits.append(f"{name}={value}")
            if getattr(p, "last_error", None):
                bits.append(f"error={str(p.last_error)[:120]!r}")
            rows.append(" ".join(bits))
        return " | ".join(rows) or "no placement rows"


# ---- the chaos schedule ------------------------------------------------------------------------


@dataclass
class ChaosLog:
    revoked: list[str] = field(default_factory=list)
    reconnected: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    outages: int = 0
    storm: FaultStorm | None = None
    timeline: list[str] = field(default_factory=list)


def spread(n: int, lo: float, hi: float, rounds: int) -> list[int]:
    """``n`` round indices spread evenly over the fraction [lo, hi] of the run."""
    if n <= 0:
        return []
    return [min(rounds - 1, int(rounds * (lo + (hi - lo) * (k + 0.5) / n))) for k in range(n)]


def run_chaos(rig: Rig, platform: Platform, rng: random.Random, seed: int,
              say: Callable[[str], None]) -> ChaosLog:
    """Churn in rounds while the faults of the schedule below happen; returns when churn ends.

    Schedule, as fractions of the rounds: the fault storm runs from 15 % to the end; 30 % of the
    connected people's tokens die at 30 %, and the broker is flushed one round later, while
    calsync is discovering the dead tokens and re-routing those people's other sessions;
    PostgreSQL drops this run's connections at 60 %, concurrently with that round's intake;
    half of the revoked people reconnect at 75 %; SIGKILLs hit random rounds, a moment after
    that round's changes were enqueued. At larger scales flushes and outages repeat.

    At 45 % the mail server greylists (451) two people on email for two rounds while one session
    of each changes, so those placements run out of attempts and fail; when it accepts again,
    the platform edits every session those two were ever in — later changes that a failed
    placement must not swallow.
    """
    scale = rig.scale
    rounds = scale.rounds
    log = ChaosLog()
    storm_at, revoke_at, reconnect_at = int(rounds * 0.15), int(rounds * 0.3), int(rounds * 0.75)
    refuse_at = int(rounds * 0.45)
    greylisted: list[Person] = []
    flush_at = {min(rounds - 1, revoke_at + 1), *spread(scale.flushes - 1, 0.45, 0.9, rounds)}
    outage_at = set(spread(scale.outages, 0.6, 0.95, rounds) if scale.outages > 1 else [int(rounds * 0.6)])
    kills: Counter[int] = Counter(rng.randrange(1, rounds) for _ in range(scale.kills))
    revoked_batch: list[Person] = []
    outage_threads: list[threading.Thread] = []
    started = time.monotonic()

    def note(text: str) -> None:
        log.timeline.append(f"{time.monotonic() - started:6.1f}s  {text}")

    for r in range(rounds):
        rig.workers.ensure_running()
        plan = RoundPlan()
        if r == storm_at:
            log.storm = FaultStorm(rig.emulators, seed + 1)
            log.storm.start()
            note("fault storm starts")
        if r == revoke_at:
            alive = [p for p in platform.people.values() if p.connected and p.connected not in p.revoked]
            revoked_batch = rng.sample(alive, math.ceil(len(alive) * 0.3)) if alive else []
            for p in revoked_batch:
                rig.revoke(p)
                log.revoked.append(f"{p.user_id}/{p.connected}")
            note(f"tokens revoked: {', '.join(log.revoked)}")
        if r == reconnect_at and revoked_batch:
            back = rng.sample(revoked_batch, (len(revoked_batch) + 1) // 2)
            rig.connect([(p, p.connected or next(iter(p.revoked))) for p in back])
            log.reconnected += [p.user_id for p in back]
            note(f"reconnected with fresh tokens: {', '.join(log.reconnected)}")
        if r in outage_at:
            t = threading.Thread(target=rig.postgres_outage, args=(scale.outage_seconds,), daemon=True)
            t.start()
            outage_threads.append(t)
            log.outages += 1
            note(f"PostgreSQL outage ({scale.outage_seconds:g} s of terminated backends)")

        if r == refuse_at:
            on_email = [p for p in platform.people.values() if p.connected is None
                        and any(p.user_id in b.participants and b.status == "scheduled"
                                for b in platform.bookings.values())]
            greylisted = rng.sample(on_email, min(2, len(on_email)))
            for p in greylisted:
                rig.refuse_mail(p.address)
                log.refused.append(p.address)
                platform.retitle_sessions_of(p, plan, every=False)
            note(f"SMTP 451 for {', '.join(log.refused)}")
        if r == refuse_at + 2 and greylisted:
            rig.accept_mail()
            touched = [sid for p in greylisted for sid in platform.retitle_sessions_of(p, plan, every=True)]
            note(f"SMTP accepts again; the platform edits their {len(touched)} sessions")

        platform.churn(scale.ops_per_round, plan)
        rig.connect(plan.connects)
        for person in plan.disconnects:
            rig.disconnect(person)
        rig.push(list(plan.changed.values()))
        if r in flush_at:
            rig.flush_broker()
            note("Redis FLUSHDB of the broker db")
        for _ in range(kills[r]):
            time.sleep(rng.uniform(0.05, 0.6))
            rig.workers.kill_random(rng)
            note("SIGKILL of a worker process group")
        time.sleep(0.3)
    for t in outage_threads:
        t.join()
    note("churn ends")
    return log


def report_lines(items: dict[str, Any]) -> Iterator[str]:
    width = max(len(k) for k in items)
    for k, v in items.items():
        yield f"  {k:<{width}}  {v}"


def print_block(out: TextIO, title: str, lines: Sequence[str]) -> None:
    print(f"== {title}", file=out)
    for line in lines:
        print(line, file=out)
