"""Re-encrypting stored credentials under a new secret key."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from cryptography.fernet import InvalidToken
from sqlalchemy import select

from sync.engine.runtime import Runtime, credential_box
from sync.store.models import Integration, OAuthFlow


@dataclass(frozen=True)
class Rotation:
    rotated: int
    unreadable: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def rotate_keys(rt: Runtime) -> Rotation:
    """Re-encrypt every stored credential under the first of CALSYNC_SECRET_KEYS.

    Run after prepending a new key; once it reports nothing unreadable, the
    old key can be dropped from the list. Rows no key opens are counted, not
    touched: their people will show up as needing a reconnect.
    """
    box = credential_box(rt.settings)
    rotated = unreadable = 0
    with rt.store.tx() as db:
        for row in db.scalars(select(Integration).where(Integration.credentials != b"")):
            try:
                row.credentials = box.rotate(row.credentials)
                rotated += 1
            except InvalidToken:
                unreadable += 1
        for flow in db.scalars(select(OAuthFlow)):
            try:
                flow.flow = box.rotate(flow.flow)
            except InvalidToken:
                db.delete(flow)  # a half-finished consent under a dropped key: start it again
    return Rotation(rotated, unreadable)
