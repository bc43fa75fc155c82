"""The demo's own folder, and the settings that point calsync at it and at the emulators.

The demo deletes its earlier database and invites before each run, so which
folder it may use is decided here, before anything is written.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from sync.errors import ConfigError

if TYPE_CHECKING:
    from sync.demo.readback import Calendars

#: Sender and ORGANIZER of the demo's invites (a reserved example domain).
DEMO_MAIL_FROM = "sessions@calsync.example"

#: The file that makes a folder the demo's own. Each run deletes its previous database and invites, so it
#: may only do that where this file says an earlier demo created (or adopted an empty) folder.
MARKER = ".calsync-demo"
MARKER_TEXT = ("This folder belongs to `calsync demo`: every run deletes and rewrites calsync.db* and\n"
               "outbox/*.eml here. Delete the folder when you no longer want the demo's output.\n")


class FolderRefused(ConfigError):
    """``--out`` names a folder the demo may not use: not its own, or not writable.

    A :class:`ConfigError`, so the CLI reports it as one line with exit status 2
    (the operator picks another folder); the message names ``--out``.
    """


def claim_folder(out: Path) -> Path:
    """Make ``out`` the demo's own folder and return it resolved, or refuse.

    The demo deletes its earlier database and invites before each run, so it
    must never run in a folder that might hold someone's real ``calsync.db`` or
    ``outbox/`` (``--out .`` in a deployment folder once deleted both). A
    folder is the demo's when it holds :data:`MARKER`; an absent or empty one
    is created or adopted, and marked before anything else is written, so an
    interrupted run still owns its folder. Any other folder is refused.

    Raises:
      FolderRefused: the folder is not empty and not the demo's, is a file, or cannot be created or written.
    """
    out = out.resolve()
    shown = repr(str(out))
    marker = out / MARKER
    if out.exists() and not out.is_dir():
        raise FolderRefused(f"--out {shown} is a file, not a folder; give a new or empty folder")
    if out.is_dir():
        if marker.is_file() and not marker.is_symlink():
            return out
        try:
            empty = next(out.iterdir(), None) is None
        except OSError as exc:
            raise FolderRefused(f"--out {shown} cannot be read ({exc.strerror}); give a new or empty folder") from None
        if not empty:
            raise FolderRefused(f"--out {shown} is not empty and was not created by calsync demo, which deletes "
                                "its database and invites on every run; give a new or empty folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        marker.write_text(MARKER_TEXT)
    except OSError as exc:
        raise FolderRefused(f"--out {shown} cannot be created or written ({exc.strerror or exc}); "
                            "give a folder you can write to") from None
    return out


def calendars_settings(calendars: Calendars) -> dict[str, str]:
    from sync.store.crypto import new_key
    from sync.testing.settings import google_settings, outlook_settings

    return {
        **google_settings(calendars.google, "calsync-demo", "calsync-demo-secret"),
        **outlook_settings(calendars.outlook, "calsync-demo", "calsync-demo-secret"),
        # A fresh key per run: the demo's tokens are the emulators' and die with them.
        "CALSYNC_SECRET_KEYS": new_key(),
    }


def use_embedded_defaults(out: Path, calendars: Calendars | None = None) -> Path:
    """Point calsync at a SQLite file, a file outbox in ``out`` and (if given) the calendar emulators.

    Whatever the environment says is overridden for these, the database
    above all: the demo's is always ``out/calsync.db``, never the operator's
    ``CALSYNC_DATABASE_URL``. Must run before :mod:`sync.engine.broker` is imported,
    because the broker is chosen and the actors bound to it at import time.
    ``out`` must be the demo's own folder (:func:`claim_folder`); a previous
    demo's database and invites in it are removed so each run starts clean.
    """
    if "sync.engine.broker" in sys.modules:
        from sync.engine.broker import broker, is_embedded

        if not is_embedded(broker):
            raise ConfigError("calsync demo needs a fresh process: a non-embedded broker is already bound")
    from sync.config import get_settings
    from sync.engine.runtime import set_runtime

    out = claim_folder(out)
    outbox = out / "outbox"
    try:
        outbox.mkdir(exist_ok=True)
        for stale in [*out.glob("calsync.db*"), *outbox.glob("*.eml")]:
            stale.unlink()
    except OSError as exc:
        raise FolderRefused(f"--out {str(out)!r}: cannot clear the previous demo's files ({exc.strerror or exc})") \
            from None
    os.environ.update({
        "CALSYNC_DATABASE_URL": f"sqlite:///{out / 'calsync.db'}",
        "CALSYNC_BROKER_URL": "memory://",
        "CALSYNC_SMTP_URL": outbox.as_uri(),
        "CALSYNC_MAIL_FROM": DEMO_MAIL_FROM,
        **(calendars_settings(calendars) if calendars is not None else {}),
    })
    get_settings.cache_clear()
    set_runtime(None)
    return outbox
