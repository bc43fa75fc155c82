"""Credentials at rest: Fernet ciphertext under rotating keys (``CALSYNC_SECRET_KEYS``).

The first key encrypts; every key decrypts, so a new key is prepended, the
rows rewritten with :meth:`CredentialBox.rotate`, and the old key dropped.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from sync.errors import ConfigError, Misconfigured


class CredentialBox:
    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise ConfigError("CALSYNC_SECRET_KEYS is not set; it is required to store credentials")
        try:
            self._fernet = MultiFernet([Fernet(k.encode()) for k in keys])
        except ValueError:
            raise ConfigError("CALSYNC_SECRET_KEYS: each key must be a urlsafe-base64 32-byte Fernet key") from None

    def seal(self, secret: dict[str, Any]) -> bytes:
        return self._fernet.encrypt(json.dumps(secret).encode())

    def open(self, blob: bytes) -> dict[str, Any]:
        """Raises Misconfigured when no key opens it: a key was dropped from
        ``CALSYNC_SECRET_KEYS`` too early, which is the operator's to fix, not the
        person's (their grant is fine, and they must not be asked to consent again)."""
        try:
            return json.loads(self._fernet.decrypt(blob))
        except InvalidToken:
            raise Misconfigured("stored credentials cannot be decrypted with the configured keys: "
                                "is a key missing from CALSYNC_SECRET_KEYS?") from None

    def rotate(self, blob: bytes) -> bytes:
        return self._fernet.rotate(blob)


def new_key() -> str:
    return Fernet.generate_key().decode()
