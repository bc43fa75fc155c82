"""The one map from a running emulator to the ``CALSYNC_*`` settings that point calsync at it.

The demo, ``python -m sync.testing.emulators``, the CLI tests and the reliability rig all start
emulators and then run calsync against them; each used to spell out the same variables, and a
new provider URL had to be added in four places. Client id and secret are the caller's: an
emulator accepts any unless a client is registered with ``add_client``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sync.testing.emulators.google import GoogleEmulator
    from sync.testing.emulators.graph import GraphEmulator

__all__ = ["google_settings", "outlook_settings"]


def google_settings(emu: GoogleEmulator, client_id: str = "local", client_secret: str = "local") -> dict[str, str]:
    """``CALSYNC_GOOGLE_*``: the Google channel's API root and OAuth endpoints on ``emu``."""
    return {
        "CALSYNC_GOOGLE_CLIENT_ID": client_id,
        "CALSYNC_GOOGLE_CLIENT_SECRET": client_secret,
        "CALSYNC_GOOGLE_API_URL": emu.url,
        "CALSYNC_GOOGLE_TOKEN_URL": emu.token_url,
        "CALSYNC_GOOGLE_AUTH_URL": emu.auth_url,
        "CALSYNC_GOOGLE_REVOKE_URL": emu.revoke_url,
        "CALSYNC_GOOGLE_USERINFO_URL": emu.userinfo_url,
    }


def outlook_settings(emu: GraphEmulator, client_id: str = "local", client_secret: str = "local") -> dict[str, str]:
    """``CALSYNC_MS_*`` and ``CALSYNC_GRAPH_URL``: the Outlook channel's authority and Graph on ``emu``.

    The emulator serves HTTPS with its own test CA (MSAL insists on an https authority), so the
    channel is told to trust that CA file.
    """
    return {
        "CALSYNC_MS_CLIENT_ID": client_id,
        "CALSYNC_MS_CLIENT_SECRET": client_secret,
        "CALSYNC_MS_TENANT": "common",
        "CALSYNC_MS_AUTHORITY_URL": emu.authority_url,
        "CALSYNC_GRAPH_URL": emu.graph_url,
        "CALSYNC_MS_CA_BUNDLE": emu.ca_file,
    }
