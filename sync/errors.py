"""Every error calsync raises on purpose, in one flat hierarchy.

Callers decide what to do by type: a :class:`TransientError` is retried with
backoff (a :class:`Throttled` one costs no attempt), a :class:`PermanentError`
fails the placement with its reason, an :class:`AuthError` switches the person
to emailed invites. The channel errors are siblings, so catching one never
catches another by accident: an ``except PermanentError`` that looks at a
status code cannot mistake a dead grant for a deleted event.
"""

from __future__ import annotations

from dataclasses import dataclass


class CalsyncError(Exception):
    """Base class for every error calsync raises deliberately."""


class ConfigError(CalsyncError):
    """A setting is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class FieldError:
    """One problem with one field of the input, e.g. ``participants[1].email``."""

    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.field}: {self.reason}"


class InvalidInput(CalsyncError):
    """Input was rejected; ``errors`` names each offending field and why."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors
        super().__init__("; ".join(str(e) for e in errors))


class NotFound(CalsyncError):
    """The session, person or integration asked for does not exist."""


class ChannelError(CalsyncError):
    """A channel (email, Google, Outlook) could not carry out an action.

    Parameters:
      status(int | None): the provider's HTTP status, when there was one.
      refused(bool): the far side answered that it did not carry the action out (an SMTP
        server's 4xx/5xx reply), so nothing reached anyone — unlike a timeout, whose
        outcome is unknown.
    """

    def __init__(self, reason: str, *, status: int | None = None, refused: bool = False) -> None:
        self.status = status
        self.refused = refused
        super().__init__(reason)


class TransientError(ChannelError):
    """Worth retrying later: rate limits, 5xx, timeouts, SMTP refusals.

    Parameters:
      retry_after(float | None): seconds the far side asked us to wait, if it said.
    """

    def __init__(self, reason: str, *, retry_after: float | None = None, status: int | None = None,
                 refused: bool = False) -> None:
        self.retry_after = retry_after
        super().__init__(reason, status=status, refused=refused)


class PermanentError(ChannelError):
    """Retrying cannot help (400, a calendar that is gone); the placement fails with the reason."""


class Throttled(TransientError):
    """Wait before asking again: our own quota is spent, or the provider rate-limited us.

    Not a failure of the placement, so it costs no attempt.
    """


class AuthError(ChannelError):
    """The person's credentials are dead (revoked, expired, undecryptable).

    The integration is marked ``needs_reconnect`` and the person falls back to
    emailed invites, so they keep getting every session.
    """


class EventGone(ChannelError):
    """The person deleted the event themselves. Recorded as drift (the copy is no
    longer live), and the next resync or change of the session re-creates it."""


class Misconfigured(ChannelError):
    """calsync's own configuration is at fault, not the person's: the OAuth client
    was refused (``invalid_client``, ``unauthorized_client``: a wrong or expired
    client secret) or stored credentials cannot be decrypted (a key missing from
    ``CALSYNC_SECRET_KEYS``).

    Nobody is marked ``needs_reconnect`` for it: the placements are held and
    retried with backoff, ``status`` and ``doctor`` name the cause, and they
    resume by themselves once the setting is fixed.
    """
