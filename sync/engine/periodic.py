"""The periodic sweep, as worker middleware: no separate scheduler process to run.

Every worker process starts a timer thread; a Redis ``SET NX PX`` lock lets
only one of them enqueue a sweep per interval, however many workers run.
"""

from __future__ import annotations

import logging
import threading

import dramatiq
from dramatiq.middleware import Middleware

from sync.config import get_settings

log = logging.getLogger(__name__)

#: Redis key that elects one sweeper per interval.
LOCK_KEY = "calsync:sweep-lock"


class PeriodicSweep(Middleware):
    def __init__(self, interval_seconds: int | None = None) -> None:
        self.interval = interval_seconds if interval_seconds is not None else get_settings().sweep_interval_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        if self.interval <= 0:
            return
        self._thread = threading.Thread(target=self._loop, args=(broker,), name="calsync-sweep", daemon=True)
        self._thread.start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._stop.set()

    def _elected(self, broker: dramatiq.Broker) -> bool:
        client = getattr(broker, "client", None)
        if client is None:
            return True
        return bool(client.set(LOCK_KEY, "1", nx=True, px=int(self.interval * 1000)))

    def _loop(self, broker: dramatiq.Broker) -> None:
        from sync.engine.tasks import sweep

        while not self._stop.wait(self.interval):
            try:
                if self._elected(broker):
                    sweep.send()
            except Exception:  # the sweeper must outlive a Redis blip
                log.exception("could not enqueue the periodic sweep")
