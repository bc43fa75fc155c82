"""Dramatiq entry point: ``dramatiq worker`` from the repository root (or ``calsync worker``).

Importing this module installs the broker from ``CALSYNC_BROKER_URL`` and
declares the actors; a periodic sweep runs in each worker process.
"""

from sync import tasks  # noqa: F401  (declares the actors)
from sync.broker import broker
from sync.periodic import PeriodicSweep

broker.add_middleware(PeriodicSweep())
