"""Local emulators of the calendar providers calsync talks to (Google cannot be reached from tests).

``GoogleEmulator`` speaks Calendar v3 + Google OAuth for the real google-api-python-client;
``base`` holds the provider-neutral HTTP server, fault injection, quota window and request log
that a Microsoft Graph emulator can reuse.
"""

from .base import EmulatorServer, FakeClock, LoggedRequest
from .google import GoogleEmulator, GoogleUser

__all__ = ["EmulatorServer", "FakeClock", "GoogleEmulator", "GoogleUser", "LoggedRequest"]
