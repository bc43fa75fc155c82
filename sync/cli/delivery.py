"""Around commands that enqueue: make ``memory://`` actually deliver before the process exits.

With Redis, enqueueing is the whole job and a separate ``calsync worker``
delivers. With the embedded broker the queue lives in this process, so the
command runs worker threads and waits for the queue, retries included, to drain.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def delivering() -> Iterator[None]:
    from sync.config import get_settings
    from sync.engine import tasks  # noqa: F401  (declares the actors before a worker starts consuming)
    from sync.engine.broker import broker, embedded_worker, is_embedded
    from sync.engine.runtime import get_runtime

    if not is_embedded(broker):
        yield
        return
    # Build the channels up front: a missing CALSYNC_SMTP_URL is then one error
    # now, not a crash in every retry of every message while the queue drains.
    get_runtime().channel("email")
    with embedded_worker(broker, get_settings().embedded_worker_threads):
        yield
