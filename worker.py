"""Dramatiq entry point: ``dramatiq worker`` from the repository root (or ``calsync worker``).

Importing this module installs the broker from ``CALSYNC_BROKER_URL`` and
declares the actors; a periodic sweep runs in each worker process.
"""

from sync import tasks  # noqa: F401  (declares the actors)
from sync.broker import broker
from sync.config import get_settings
from sync.periodic import PeriodicSweep

broker.add_middleware(PeriodicSweep())
if get_settings().metrics_port:
    # Reads dramatiq_prom_* at import; `calsync worker` sets them (and a fresh
    # PROMETHEUS_MULTIPROC_DIR) before this process started.
    from dramatiq.middleware.prometheus import Prometheus

    broker.add_middleware(Prometheus())
