"""Every calendar converges after chaos: real workers on PostgreSQL and Redis, killed, starved and lied to.

The platform books sessions and keeps changing them while two ``calsync worker`` process
groups (4 threads each) run on Redis and a private PostgreSQL schema; meanwhile workers are
SIGKILLed, the Google and Graph emulators answer 5xx, 429 (with and without Retry-After),
lose responses and answer late, the broker's Redis db is flushed, this run's PostgreSQL
connections are terminated, and 30 % of the connected people lose their tokens (half of
them reconnect). Once the faults stop, one ``calsync sweep`` runs and the workers drain;
then every person's calendar is read back as their calendar app would show it and compared
with the store (``calendar_view.check``): zero missing, zero duplicate and zero stale copies.

CI runs it at scale 1 (about a minute and a half on 2 cores); ``CALSYNC_RELIABILITY_SCALE=10``
is the long run. ``CALSYNC_RELIABILITY_SEED`` replays a run's churn and schedule (timing
still varies: the workers race for real). ``pytest -s`` shows the figures; they are also in
the test report's properties (``--junitxml``).
"""

from __future__ import annotations

import json
import os
import random
import time

import pytest

from tests.reliability.calendar_view import check, identical_resends
from tests.reliability.chaos import LEASE_SECONDS, FaultStorm, Platform, Rig, Scale, report_lines, run_chaos

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.postgres]


def test_every_calendar_converges_after_chaos(tmp_path, record_property):
    scale = Scale.from_env()
    seed = int(os.environ.get("CALSYNC_RELIABILITY_SEED") or random.randrange(2**31))
    rng = random.Random(seed)
    began = time.monotonic()
    phases: dict[str, float] = {}

    def say(line: str) -> None:
        print(line, flush=True)

    def phase(name: str, since: float) -> float:
        now = time.monotonic()
        phases[name] = round(now - since, 1)
        return now

    say(f"\nreliability run: seed {seed}, scale {scale.factor} (CALSYNC_RELIABILITY_SEED={seed} "
        f"CALSYNC_RELIABILITY_SCALE={scale.factor} replays the churn)")
    with Rig(tmp_path, scale, say) as rig:
        t = time.monotonic()
        platform = Platform(rng, scale)
        # Given a migrated private PostgreSQL schema and an empty Redis broker db
        rig.calsync_ok("db", "upgrade")
        # And about 40 % of the people connected to Google or Outlook (tokens imported)
        rig.connect(platform.initial_connections())
        # And every session booked through `calsync sessions upsert`
        rig.push(platform.payloads())
        # And two `calsync worker` process groups of 4 threads on Redis
        rig.workers.start_all()
        t = phase("setup", t)

        # When the platform churns in rounds while workers are SIGKILLed, providers fail,
        # the broker is flushed, PostgreSQL drops connections and tokens die (see run_chaos)
        chaos = run_chaos(rig, platform, rng, seed, say)
        t = phase("churn under faults", t)

        # And the faults stop, killed workers are back, their leases expire, one sweep runs
        if chaos.storm is not None:
            chaos.storm.stop()
        rig.workers.ensure_running()
        time.sleep(LEASE_SECONDS + 1)
        swept = json.loads(rig.calsync_ok("sweep", "--json"))
        # And the workers drain
        sessions = list(platform.bookings)
        drain = rig.drain(sessions)
        t = phase("sweep and drain", t)

        # Then each person's calendar app shows exactly one current copy of each session they
        # are in, on the channel they use now, and nothing of the rest
        truth, mismatches, states = rig.read_truth(platform)
        seen, odd = rig.observe()
        verdict = check(truth, seen)
        verdict.anomalies += odd + rig.cli_crashes
        t = phase("read back and check", t)

        # (Calendars treat these as the same invite; README allows them after a crash between send and commit.)
        resent = identical_resends(seen.invites)
        tracebacks, last_lines = rig.workers.tracebacks()
        hits = FaultStorm.hits(rig.emulators)
        figures = {
            "seed": seed,
            "scale": scale.factor,
            "sessions / people": f"{len(platform.bookings)} / {len(platform.people)}",
            "churn operations": f"{sum(platform.ops.values())} {dict(platform.ops)}",
            "calsync CLI calls": f"{sum(rig.cli_calls.values())} {dict(rig.cli_calls)}",
            "CLI calls that failed (retried)": f"{len(rig.cli_failures)} {rig.cli_failures[:5]}",
            "workers": f"{scale.workers} process groups x {scale.threads} threads",
            "SIGKILLs / restarts": f"{rig.workers.kills} / {rig.workers.restarts}",
            "unexpected worker exits": len(rig.workers.unexpected_exits),
            "faults queued": sum(chaos.storm.queued.values()) if chaos.storm else 0,
            "faults hit": f"{sum(hits.values())} {dict(sorted(hits.items()))}",
            "SMTP greylisted addresses / RCPTs refused": f"{chaos.refused} / {len(rig.smtp.mailbox.refused)}",
            "broker flushes": rig.flushes,
            "PostgreSQL outages / backends terminated": f"{chaos.outages} / {rig.terminated_backends}",
            "tokens revoked / reconnected": f"{len(chaos.revoked)} {chaos.revoked} / "
                                            f"{len(chaos.reconnected)} {chaos.reconnected}",
            "final sweep enqueued": swept.get("enqueued"),
            "drain": f"{'settled' if drain.settled else 'NOT settled'} after {drain.seconds:.1f} s"
                     + ("" if drain.settled else f"; unsettled {drain.unsettled[:10]}, backlog {drain.backlog}"),
            "dead letters": f"{rig.dead_letters()} {rig.dead_letter_summaries()[:3]}",
            "emails sent (SMTP messages)": len(rig.smtp.mailbox.messages),
            "emails resent identically": f"{len(resent)} {resent[:3]}",
            "live events google / outlook": f"{sum(1 for e in seen.events if e.provider == 'google')} / "
                                            f"{sum(1 for e in seen.events if e.provider == 'outlook')}",
            "provider API requests google / outlook": f"{rig.google.count(kind='api')} / "
                                                      f"{rig.graph.count(kind='api')}",
            "placements by channel/state": dict(sorted(states.items())),
            "worker tracebacks": f"{tracebacks} {dict(last_lines.most_common(4))}",
            "store vs platform mismatches": len(mismatches),
            **{f"copies {k}": v for k, v in verdict.counts().items()},
            "phases (s)": phases,
            "wall time (s)": round(time.monotonic() - began, 1),
        }
        lines = ["", "== reliability figures", *report_lines(figures), "== timeline", *chaos.timeline,
                 "== verdict", verdict.headline()]
        for p in verdict.problems[:40]:
            lines += ["  " + p.line(), "      store: " + rig.store_placements(p.session_id, p.user_id)]
        if len(verdict.problems) > 40:
            lines.append(f"  … and {len(verdict.problems) - 40} more")
        lines += [f"  anomaly: {a}" for a in verdict.anomalies[:20]]
        lines += [f"  store vs platform: {m}" for m in mismatches[:20]]
        lines += [f"  {e}" for e in rig.workers.unexpected_exits]
        lines += [f"  placement not placed/withdrawn/stranded: {o}" for o in rig.odd_placements(sessions)]
        lines += [f"  stranded (expected): {s}" for s in verdict.stranded_copies[:10]]
        report = "\n".join(lines)
        say(report)
        for key, value in figures.items():
            record_property(key, value)
        record_property("problems", "\n".join(p.line() for p in verdict.problems))

    assert verdict.ok and not mismatches, report
