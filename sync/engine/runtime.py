"""What one process needs to reconcile: settings, the store and the channels, built once."""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Callable

from sync.config import Settings, get_settings, uses_redis
from sync.providers.channel import Channel
from sync.quota import MemoryQuota, QuotaBackend, RedisQuota
from sync.store.crypto import CredentialBox
from sync.store.db import Store


def quota_backend(settings: Settings) -> QuotaBackend:
    """Redis when the broker is Redis, so every worker process shares one count."""
    if uses_redis(settings.broker_url):
        import redis

        return RedisQuota(redis.Redis.from_url(settings.broker_url))
    return MemoryQuota()


def credential_box(settings: Settings) -> CredentialBox:
    """The box every stored credential is sealed in, under ``CALSYNC_SECRET_KEYS`` (the first seals)."""
    return CredentialBox([k.get_secret_value() for k in settings.secret_keys])


def default_channels(settings: Settings, store: Store) -> dict[str, Channel]:
    """Every channel this process can use: email always, a provider once its OAuth client is set."""
    from sync.email_fallback import EmailChannel
    from sync.mail.transport import transport_from_url

    transport = transport_from_url(settings.require("smtp_url"), timeout=settings.io_timeout_seconds)
    channels: dict[str, Channel] = {"email": EmailChannel(store, transport, settings.require("mail_from"))}
    if settings.google_client_id or settings.ms_client_id:
        box = credential_box(settings)
        shared = quota_backend(settings)
        if settings.google_client_id:
            from sync.providers.google import GoogleChannel

            channels["google"] = GoogleChannel(settings, store, box, shared)
        if settings.ms_client_id:
            from sync.providers.outlook import OutlookChannel

            channels["outlook"] = OutlookChannel(settings, store, box, shared)
    return channels


class Runtime:
    """Shared by every worker thread of a process.

    Channels are built on first use, so intake and read-only commands work
    without SMTP or provider settings.
    """

    def __init__(self, settings: Settings, store: Store | None = None,
                 channels: Callable[[Settings, Store], dict[str, Channel]] = default_channels) -> None:
        self.settings = settings
        self.store = store or Store(settings.database_url)
        self._make_channels = channels
        self._channels: dict[str, Channel] | None = None
        self._lock = threading.Lock()
        #: Identifies this process in placement lease tokens (each run adds its own part),
        #: for diagnosing a stuck lease.
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    @property
    def channels(self) -> dict[str, Channel]:
        with self._lock:
            if self._channels is None:
                self._channels = self._make_channels(self.settings, self.store)
            return self._channels

    def channel(self, name: str) -> Channel | None:
        return self.channels.get(name)


_lock = threading.Lock()
_runtime: Runtime | None = None


def get_runtime() -> Runtime:
    global _runtime
    with _lock:
        if _runtime is None:
            _runtime = Runtime(get_settings())
        return _runtime


def set_runtime(runtime: Runtime | None) -> None:
    """Tests and the demo install their own runtime; None makes the next call rebuild."""
    global _runtime
    with _lock:
        _runtime = runtime
