"""The connector seam: how a person's consent becomes stored credentials, per provider.

``sync.accounts`` drives connect, import and disconnect the same way for every
provider through this protocol; what differs (Google's PKCE code exchange, the
flow MSAL keeps between consent and callback, Google's revocation endpoint)
stays inside each provider's connector.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Protocol

from sync.config import Settings


@dataclass(frozen=True)
class Grant:
    """What a consent or an imported token yields: the secret to seal, and the account it belongs to."""

    secret: dict[str, Any]
    account_email: str | None


class Connector(Protocol):
    """One provider's OAuth: start, finish, import, revoke."""

    #: The channel name of the provider, as stored on an integration.
    provider: str
    #: Whether ``start`` returns a flow that must be kept (sealed) until ``finish``.
    keeps_flow: bool

    def start(self, state: str, verifier: str, login_hint: str | None) -> tuple[str, dict[str, Any] | None]:
        """The consent URL for the person, and the flow to keep sealed until the callback (None: nothing)."""

    def finish(self, flow: dict[str, Any] | None, callback: dict[str, str], verifier: str) -> Grant:
        """Exchange the callback's code.

        Raises:
          AuthError: the provider refused the code; TransientError: it could not be reached.
        """

    def import_token(self, refresh_token: str) -> Grant:
        """A grant from a refresh token the platform already holds."""

    def revoke(self, secret: dict[str, Any]) -> bool:
        """Best effort; False when the provider has no revocation or the token is already dead."""


#: Each provider's connector class, imported on first use (each pulls in its provider's client library).
_CONNECTORS = {"google": "sync.providers.google_oauth:GoogleConnector",
               "outlook": "sync.providers.outlook_oauth:OutlookConnector"}
#: Providers with a channel and a connector in this release.
PROVIDERS = tuple(_CONNECTORS)
#: The setting that, once set, makes a provider available in a deployment.
_CLIENT_ID = {"google": "google_client_id", "outlook": "ms_client_id"}


def configured(settings: Settings) -> list[str]:
    """The providers this deployment has an OAuth client for: the only ones people are offered."""
    return [p for p in PROVIDERS if getattr(settings, _CLIENT_ID[p])]


def connector_for(settings: Settings, provider: str) -> Connector:
    """The connector of ``provider``, one of :data:`PROVIDERS` (a KeyError otherwise: callers validate first)."""
    module, _, name = _CONNECTORS[provider].partition(":")
    return getattr(importlib.import_module(module), name)(settings)
