"""Local emulators of the calendar providers calsync talks to (neither can be reached from tests).

``GoogleEmulator`` speaks Calendar v3 + Google OAuth for the real google-api-python-client;
``GraphEmulator`` speaks the Microsoft identity platform + Graph for msal and requests. What both
need is written once: the HTTP server, fault injection, quota window and request log in
:mod:`.server`, the OAuth authorization server in :mod:`.oauth`, the TLS material in :mod:`.tls`.
"""

from .server import EmulatorServer, FakeClock, LoggedRequest

__all__ = ["EmulatorServer", "FakeClock", "GoogleEmulator", "GraphEmulator", "LoggedRequest"]


def __getattr__(name: str) -> object:
    # The provider packages load their client libraries' data (discovery document, TLS keys):
    # import them only when asked for, so ``from sync.testing.emulators import FakeClock`` stays cheap.
    if name == "GoogleEmulator":
        from .google import GoogleEmulator

        return GoogleEmulator
    if name == "GraphEmulator":
        from .graph import GraphEmulator

        return GraphEmulator
    raise AttributeError(name)
