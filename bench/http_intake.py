"""HTTP intake benchmark: ``calsync serve`` in its own process, driven open-loop over real HTTP.

    PYTHONPATH=. .venv/bin/python -m bench.http_intake [--db-url URL] [--redis-url URL]
        [--rate R] [--seconds S] [--e2e-rate R2] [--e2e-seconds S2] [--provider-latency-ms MS]
        [--worker-processes P] [--worker-threads T]

Two figures, each from a fresh PostgreSQL schema (created in ``--db-url``, default
``CALSYNC_TEST_POSTGRES_URL``, migrated, dropped at the end) and a flushed Redis database
(``--redis-url``, the broker):

1. **Intake.** ``python -m sync.cli serve`` (uvicorn) on a free loopback port; this process sends
   ``PUT /v1/sessions/{id}`` at a fixed R requests/s (open loop: request k is due at k / R s whatever
   the earlier ones did) for S seconds, each a new session id, and prints the throughput achieved
   and the p50/p99 latency, measured from when each request was *due* (so a stalled server is not
   hidden by the client waiting for it). Aim: p99 <= 50 ms.
2. **PUT -> event.** The same server plus ``python -m sync.cli worker`` on the Redis broker; one
   person is connected to Google through ``calsync integrations import`` (the Google emulator runs
   in this process with ``latency`` added to every request it answers). Sessions of that person
   are put at R2/s for S2 s; this process polls the emulated calendar and records when each
   session's event appears. Aim: p99 <= provider time + 250 ms, where provider time is the
   emulator requests per session times the latency.

It prints figures and never asserts a target: exit status 1 means the bench itself went wrong (a
PUT not answered 202, an event that never appeared, a process that did not start).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from bench.harness import environment, session_payload
from sync.testing.postgres import private_schema

TOKEN = "bench-http-token"
PERSON = ("u-google", "bench-google@example.com")
INTAKE_AIM_MS = 50.0
E2E_SLACK_MS = 250.0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.http_intake", description=__doc__.splitlines()[0])
    p.add_argument("--db-url", default=os.environ.get("CALSYNC_TEST_POSTGRES_URL"),
                   help="PostgreSQL server URL; a private schema is created there and dropped after "
                        "(default CALSYNC_TEST_POSTGRES_URL)")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/13",
                   help="the broker's Redis database, FLUSHED before each phase and at the end (default db 13)")
    p.add_argument("--rate", type=float, default=100.0, help="intake: PUTs per second, open loop (default 100)")
    p.add_argument("--seconds", type=float, default=10.0, help="intake: how long to send (default 10)")
    p.add_argument("--e2e-rate", type=float, default=20.0, help="PUT -> event: sessions per second (default 20)")
    p.add_argument("--e2e-seconds", type=float, default=10.0, help="PUT -> event: how long to send (default 10)")
    p.add_argument("--provider-latency-ms", type=float, default=100.0,
                   help="latency the Google emulator adds to every request (default 100)")
    p.add_argument("--worker-processes", type=int, default=1, help="calsync worker --processes (default 1)")
    p.add_argument("--worker-threads", type=int, default=8, help="calsync worker --threads (default 8)")
    p.add_argument("--client-threads", type=int, default=64, help="threads sending the PUTs (default 64)")
    p.add_argument("--settle-seconds", type=float, default=60.0,
                   help="longest wait for the last event after the last PUT (default 60)")
    return p


# ---- statistics ------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by the nearest-rank method; nan for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), -(-int(q * len(ordered)) // 100)))
    return ordered[rank - 1]


# ---- processes -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def process(argv: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``argv`` in its own process group (a worker forks), its output in ``log``; stopped on exit."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()


def wait_healthy(base: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"calsync serve exited {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            if requests.get(f"{base}/readyz", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"calsync serve not ready after {timeout:g} s: {log.read_text()[-2000:]}")


# ---- the open-loop driver --------------------------------------------------------------------


@dataclass
class Sent:
    index: int
    due: float       # when it was scheduled (perf_counter)
    sent: float      # when the client thread started it
    done: float      # when the answer was read
    status: int | None
    error: str | None = None


def drive(base: str, rate: float, seconds: float, body: Callable[[int], dict[str, Any]],
          threads: int) -> tuple[list[Sent], float]:
    """PUT session ``body(k)`` at ``start + k / rate`` for k < rate x seconds; (results, start)."""
    import requests

    n = max(1, round(rate * seconds))
    bodies = [body(k) for k in range(n)]
    payloads, ids = [json.dumps(b).encode() for b in bodies], [str(b["id"]) for b in bodies]
    local = threading.local()
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}

    def one(k: int, due: float) -> Sent:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
        sent = time.perf_counter()
        try:
            answer = session.put(f"{base}/v1/sessions/{ids[k]}", data=payloads[k], headers=headers,
                                 timeout=30)
            return Sent(k, due, sent, time.perf_counter(), answer.status_code)
        except requests.RequestException as exc:
            return Sent(k, due, sent, time.perf_counter(), None, type(exc).__name__)

    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="bench-client")
    start = time.perf_counter() + 0.2
    futures = []
    for k in range(n):
        due = start + k / rate
        pause = due - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        futures.append(pool.submit(one, k, due))
    results = [f.result() for f in futures]
    pool.shutdown()
    return results, start


def latency_line(label: str, values_ms: Sequence[float]) -> str:
    return f"{label}: p50 {percentile(values_ms, 50):.1f} ms, p99 {percentile(values_ms, 99):.1f} ms, " \
           f"max {max(values_ms):.1f} ms"


# ---- the run ---------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Runs the benchmark with ``argv`` (default: the command line), printing to ``out``; 0, or 1 if it went wrong."""
    argv = list(sys.argv[1:] if argv is None else argv)
    out = out or sys.stdout
    args = parser().parse_args(argv)

    def say(line: str = "") -> None:
        print(line, file=out, flush=True)

    if not args.db_url or not args.db_url.startswith("postgresql"):
        say("error: give a PostgreSQL server with --db-url or CALSYNC_TEST_POSTGRES_URL")
        return 2
    import redis

    from sync.store.crypto import new_key
    from sync.testing.emulators.google import GoogleEmulator
    from sync.testing.settings import google_settings

    say(f"command: PYTHONPATH=. {os.path.basename(sys.executable)} -m bench.http_intake {shlex.join(argv)}".rstrip())
    say(environment())
    say(f"setup: PostgreSQL {args.db_url.rsplit('@', 1)[-1]} (a fresh schema per phase), broker "
        f"{args.redis_url} (flushed), calsync serve = 1 uvicorn process, calsync worker = "
        f"{args.worker_processes} process(es) x {args.worker_threads} threads; client and servers share this machine")
    broker = redis.Redis.from_url(args.redis_url)
    tmp = tempfile.TemporaryDirectory(prefix="calsync-bench-http-")
    folder = Path(tmp.name)
    key = new_key()

    def env_for(db_url: str, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CALSYNC_")}
        env.update({"CALSYNC_DATABASE_URL": db_url, "CALSYNC_BROKER_URL": args.redis_url,
                    "CALSYNC_API_TOKENS": TOKEN, "CALSYNC_SECRET_KEYS": key,
                    "CALSYNC_MAIL_FROM": "sessions@calsync.example",
                    "CALSYNC_SMTP_URL": (folder / "outbox").as_uri(), "PYTHONPATH": str(Path.cwd())})
        env.update(extra or {})
        return env

    def serve(env: dict[str, str], name: str) -> Any:
        port = free_port()
        log = folder / f"{name}.log"
        ctx = process([sys.executable, "-m", "sync.cli", "serve", "--port", str(port)], env, log)
        proc = ctx.__enter__()
        try:
            wait_healthy(f"http://127.0.0.1:{port}", proc, log)
        except BaseException:
            ctx.__exit__(None, None, None)
            raise
        return ctx, f"http://127.0.0.1:{port}"

    failed = False
    try:
        # ---- 1. intake ----
        broker.flushdb()
        with private_schema(args.db_url) as db_url:
            ctx, base = serve(env_for(db_url), "serve-intake")
            try:
                # Warm up (connections, the first transaction, imports on first use); not counted.
                drive(base, 20, 0.5, lambda k: session_payload(800_000 + k, 1, [PERSON]), 4)
                results, start = drive(base, args.rate, args.seconds,
                                       lambda k: session_payload(k, 1, [PERSON]), args.client_threads)
            finally:
                ctx.__exit__(None, None, None)
        n = len(results)
        ok = [r for r in results if r.status == 202]
        # From the first due time to the last answer, and never shorter than the schedule itself.
        span = max(max(r.done for r in results) - start, n / args.rate)
        throughput = len(ok) / span
        from_due = [(r.done - r.due) * 1000 for r in results]
        from_sent = [(r.done - r.sent) * 1000 for r in results]
        lag = max((r.sent - r.due) * 1000 for r in results)
        p99 = percentile(from_due, 99)
        say()
        say(f"== intake: PUT /v1/sessions/{{id}} open loop at {args.rate:g}/s for {args.seconds:g} s "
            f"({n} requests, each a new session)")
        say(f"  answers: {dict(Counter(r.status if r.status else r.error for r in results))}")
        say(f"  throughput achieved: {throughput:.1f} 202s/s over {span:.2f} s (offered {args.rate:g}/s) "
            f"= {throughput / args.rate:.3f} of offered")
        say("  " + latency_line("latency from when each PUT was due", from_due)
            + f"   [aim p99 <= {INTAKE_AIM_MS:g} ms]")
        say("  " + latency_line("latency from when each PUT was sent", from_sent))
        say(f"  client: latest start after its due time {lag:.1f} ms")
        intake_ratio = p99 / INTAKE_AIM_MS
        if len(ok) != n:
            say(f"  ERROR: {n - len(ok)} PUTs not answered 202")
            failed = True

        # ---- 2. PUT -> event on the emulated Google calendar ----
        broker.flushdb()
        with GoogleEmulator() as emu, private_schema(args.db_url) as db_url:
            env = env_for(db_url, google_settings(emu, "calsync-bench", "bench-secret"))
            token = emu.add_user(PERSON[1])
            imported = subprocess.run(
                [sys.executable, "-m", "sync.cli", "integrations", "import", "--json", "-"], env=env,
                input=json.dumps([{"user_id": PERSON[0], "provider": "google", "account_email": PERSON[1],
                                   "refresh_token": token}]).encode(), capture_output=True, timeout=120)
            if imported.returncode != 0:
                raise RuntimeError(f"integrations import failed: {imported.stdout!r} {imported.stderr!r}")
            ctx, base = serve(env, "serve-e2e")
            worker_argv = [sys.executable, "-m", "sync.cli", "worker", "--processes", str(args.worker_processes),
                           "--threads", str(args.worker_threads)]
            try:
                with process(worker_argv, env, folder / "worker.log") as worker:
                    seen: dict[str, float] = {}
                    stop = threading.Event()

                    def poll() -> None:
                        while not stop.is_set():
                            now = time.perf_counter()
                            for event in emu.events(PERSON[1]):
                                sid = event.get("extendedProperties", {}).get("private", {}).get("calsyncSession")
                                if sid and sid not in seen:
                                    seen[sid] = now
                            time.sleep(0.005)

                    poller = threading.Thread(target=poll, name="bench-calendar-poll", daemon=True)
                    poller.start()
                    # Warm up: the worker is up, has its token, and has placed one event before timing starts.
                    warm, _ = drive(base, 10, 0.3, lambda k: session_payload(900_000 + k, 1, [PERSON]), 4)
                    deadline = time.monotonic() + 120
                    while not all(f"bench-{900_000 + r.index:06d}" in seen for r in warm):
                        if worker.poll() is not None or time.monotonic() > deadline:
                            raise RuntimeError("the worker placed no warm-up event: "
                                               + (folder / "worker.log").read_text()[-2000:])
                        time.sleep(0.05)
                    emu.latency = args.provider_latency_ms / 1000
                    log_from = len(emu.request_log)
                    results2, start2 = drive(base, args.e2e_rate, args.e2e_seconds,
                                             lambda k: session_payload(k, 1, [PERSON]), args.client_threads)
                    ids = {r.index: f"bench-{r.index:06d}" for r in results2}
                    deadline = time.monotonic() + args.settle_seconds
                    while not all(sid in seen for sid in ids.values()) and time.monotonic() < deadline:
                        time.sleep(0.05)
                    stop.set()
                    poller.join()
                    emu_log = emu.request_log[log_from:]
            finally:
                ctx.__exit__(None, None, None)
        n2 = len(results2)
        missing = [sid for sid in ids.values() if sid not in seen]
        e2e = [(seen[ids[r.index]] - r.due) * 1000 for r in results2 if ids[r.index] in seen]
        calls = Counter(f"{x.kind} {x.method}" for x in emu_log)
        per_session = len(emu_log) / n2
        provider_ms = per_session * args.provider_latency_ms
        aim2 = provider_ms + E2E_SLACK_MS
        p99_2 = percentile(e2e, 99)
        say()
        say(f"== PUT -> event on the emulated Google calendar: {args.e2e_rate:g} sessions/s for "
            f"{args.e2e_seconds:g} s ({n2} sessions), provider latency {args.provider_latency_ms:g} ms per request")
        say(f"  PUT answers: {dict(Counter(r.status if r.status else r.error for r in results2))}; "
            f"events seen: {n2 - len(missing)} of {n2}")
        say(f"  emulator requests per session: {per_session:.2f} ({dict(calls)}); "
            f"provider time = {per_session:.2f} x {args.provider_latency_ms:g} ms = {provider_ms:.0f} ms")
        if e2e:
            say("  " + latency_line("PUT due -> event on the calendar (polled every 5 ms)", e2e)
                + f"   [aim p99 <= provider time + {E2E_SLACK_MS:g} ms = {aim2:.0f} ms]")
            say(f"  beyond the provider's own time: p50 {percentile(e2e, 50) - provider_ms:.0f} ms, "
                f"p99 {p99_2 - provider_ms:.0f} ms")
        if missing or any(r.status != 202 for r in results2):
            say(f"  ERROR: {len(missing)} events never appeared (first: {missing[:3]}); "
                f"{sum(r.status != 202 for r in results2)} PUTs not answered 202")
            failed = True
        say()
        say(f"ratios (this run): intake throughput / offered {throughput / args.rate:.3f}; intake p99 / aim "
            f"{intake_ratio:.2f}; PUT -> event p99 / aim {p99_2 / aim2:.2f}")
        return 1 if failed else 0
    finally:
        broker.flushdb()
        broker.close()
        tmp.cleanup()


if __name__ == "__main__":
    sys.exit(main())
