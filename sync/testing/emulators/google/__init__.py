"""The Google emulator: Calendar v3 (:mod:`.calendar`) on Google OAuth (:mod:`.identity`); bodies: :mod:`.schema`."""

from .calendar import GoogleEmulator, GoogleUser
from .identity import DEFAULT_SCOPES

__all__ = ["DEFAULT_SCOPES", "GoogleEmulator", "GoogleUser"]
