"""The Dramatiq entry module of calsync's worker processes (``calsync worker`` runs it).

Here, and only here, calsync's broker becomes the process-wide Dramatiq broker:
these processes are calsync's own. Importing it declares the actors and adds
the periodic sweep, the heartbeat (and, with ``CALSYNC_METRICS_PORT``,
Prometheus) middleware.
The root ``worker.py`` re-exports it for ``dramatiq worker`` run from a checkout.
"""

import dramatiq

from sync.config import get_settings
from sync.engine.heartbeat import Heartbeat
from sync.engine.periodic import PeriodicSweep
from sync.engine.tasks import broker

dramatiq.set_broker(broker)
broker.add_middleware(PeriodicSweep())
broker.add_middleware(Heartbeat(gauges=bool(get_settings().metrics_port)))
if get_settings().metrics_port:
    # Reads dramatiq_prom_* at import; `calsync worker` sets them (and a fresh
    # PROMETHEUS_MULTIPROC_DIR) before this process started.
    from dramatiq.middleware.prometheus import Prometheus

    broker.add_middleware(Prometheus())

__all__ = ["broker"]
